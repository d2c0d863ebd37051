#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: build (unless build/ is already there), run the whole test
# suite with the CUDA tests live, rerun the CUDA tests under compute-sanitizer (memcheck and
# racecheck), run the targeted-dropout benchmark (JSON) and the PyTorch peer on the same shapes,
# and write logs plus a short summary into OUTDIR.
# Usage: apps/gpu-check.sh OUTDIR [PEER_SCRIPT]   (PEER_SCRIPT: torch_td.py, optional)
set -uo pipefail
out=${1:?usage: apps/gpu-check.sh OUTDIR [PEER_SCRIPT]}
peer=${2:-}
cd "$(dirname "$0")/.."
mkdir -p "$out"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  nvcc --version | tail -1
  git rev-parse HEAD 2>/dev/null || true
} > "$out/machine.txt" 2>&1
if [ ! -x build/tests/tdrop_tests ]; then
  cmake -S . -B build -G Ninja > "$out/configure.log" 2>&1 &&
    cmake --build build -j > "$out/build.log" 2>&1 || { echo "build failed: $out/build.log"; exit 1; }
fi
status=0
ctest --test-dir build -j 8 --output-on-failure > "$out/ctest.log" 2>&1 || status=1
for tool in memcheck racecheck; do
  compute-sanitizer --tool "$tool" --error-exitcode 3 build/tests/tdrop_tests \
    --gtest_filter='Cuda*:*/Cuda*' > "$out/sanitizer-$tool.log" 2>&1 || status=1
done
build/bench/bench_targeted_dropout --benchmark_format=json --benchmark_out="$out/bench_targeted_dropout.json" \
  --benchmark_out_format=json --benchmark_filter='cuda' > "$out/bench_targeted_dropout.txt" 2>&1 || status=1
if [ -n "$peer" ]; then
  python3 "$peer" --json "$out/torch_td.jsonl" > "$out/torch_td.txt" 2>&1 || status=1
fi
{
  echo "# tdrop GPU check"; cat "$out/machine.txt"; echo
  echo "ctest:"; grep -E "tests passed|tests failed" "$out/ctest.log"
  for tool in memcheck racecheck; do echo "$tool:"; grep -E "ERROR SUMMARY" "$out/sanitizer-$tool.log" | tail -1; done
  echo; echo "benchmark (fused vs unfused vs copy):"; grep -E "^cuda_" "$out/bench_targeted_dropout.txt"
  [ -n "$peer" ] && { echo; echo "PyTorch peer:"; cat "$out/torch_td.txt"; }
} > "$out/summary.md"
cat "$out/summary.md"
exit $status
