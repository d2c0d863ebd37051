#!/usr/bin/env bash
# Packs what a bare GPU machine needs to run tdrop without building: the binaries of a Release
# build for sm_90, the shared libraries it lacks (OpenBLAS and its Fortran runtime, Google Benchmark; cuDNN and
# cuBLAS are taken from the machine), Fashion-MNIST and the PyTorch peer, into BUNDLE_DIR, for
# apps/gpu-check.sh to unpack there.
#
#   cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
#         -DCMAKE_CUDA_FLAGS=-lineinfo && cmake --build build-gpu
#   apps/gpu-bundle.sh [BUILD_DIR=build-gpu] [BUNDLE_DIR=.gpu] [PEER=torch_td.py]
#
# BASELINE_COMMIT=REV also builds bench_targeted_dropout at that commit (in a temporary git
# worktree, same flags) and packs it as bench_baseline, which gpu-check.sh's bench stage times
# beside the current kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
bundle=${2:-.gpu}
peer=${3:-}
data=${TDROP_DATA_DIR:-/usr/share/datasets/fashion-mnist}
bins="tdrop tests/tdrop_tests bench/bench_targeted_dropout bench/bench_step_kernels"
for f in $bins; do
  [ -x "$build/$f" ] || { echo "gpu-bundle: $build/$f not built" >&2; exit 2; }
done
rm -rf "$bundle" && mkdir -p "$bundle/data"
stage=$(mktemp -d -t tdrop_bundle.XXXXXX)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
for f in $bins; do
  strip -o "$stage/bin/$(basename "$f")" "$build/$f"
done
# The non-system, non-CUDA libraries the binaries load (ldd names them here).
for f in $bins; do ldd "$build/$f"; done |
  awk '/=> \//{print $3}' | grep -E 'openblas|gfortran|quadmath|benchmark' | sort -u |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
if [ -n "${BASELINE_COMMIT:-}" ]; then
  tree=$(mktemp -d -t tdrop_baseline.XXXXXX)
  git worktree add --detach "$tree" "$BASELINE_COMMIT" > /dev/null
  cmake -S "$tree" -B "$tree/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES=90 > /dev/null
  cmake --build "$tree/build" --target bench_targeted_dropout > /dev/null
  strip -o "$stage/bin/bench_baseline" "$tree/build/bench/bench_targeted_dropout"
  git rev-parse "$BASELINE_COMMIT" > "$bundle/baseline_commit.txt"
  git worktree remove --force "$tree"
fi
tar -C "$stage" -cJf "$bundle/tdrop-bin.tar.xz" bin lib
cp "$data"/*-ubyte.gz "$bundle/data/"
[ -n "$peer" ] && cp "$peer" "$bundle/torch_td.py"
git rev-parse HEAD > "$bundle/commit.txt" 2>/dev/null || true
du -sh "$bundle"/* | sed 's/^/gpu-bundle: /'
