#!/usr/bin/env bash
# The GPU proof, on a machine with an NVIDIA GPU. Runs the chosen stages, each under a time
# limit, and writes OUTDIR/summary.md plus OUTDIR/logs.tar.gz (every log, JSON and plot).
#
#   apps/gpu-check.sh OUTDIR [STAGES] [SECONDS]
#
# STAGES (comma-separated, default tests,bench,peer,speed,sanitizer):
#   tests      the whole gtest suite with the CUDA tests live (16 shards in parallel)
#   bench      bench_targeted_dropout and bench_step_kernels (batch norm, ReLU, axpy, mask
#              gradient on ResNet-32 shapes), CUDA cases, JSON
#   peer       the PyTorch peer (torch_td.py) on the same shape sets, in the same call
#   speed      ResNet-32 training images/s: tdrop without TD, with fused and unfused TD, with
#              --cudnn-nondeterministic, and bench/resnet32_torch.py (PyTorch eager) with and
#              without TD; the zoo's Transformer with and without TD
#   sanitizer  compute-sanitizer memcheck and racecheck over the CUDA tests
#   ncu        Nsight Compute on the fused kernel (4096x4096, ResNet-32 and 1024x65536:
#              throughput, occupancy, issue rate, stall reasons), plus its register/spill report
#   profile    where a ResNet-32 training step (batch 128, TD fused) spends GPU time, per kernel
#              (nsys when the machine has it, else ncu), against the step's wall time
#   train      the ResNet-32 reproduction: no dropout, TD g=0.5 a=0.5, TD ramped to 0.99/0.99
#              (TRAIN_EPOCHS, default 15), then prune sweeps to 99% (as trained, and with batch
#              norm re-estimated: --bn-recalibrate 50), each with one plot
# With BASELINE_BENCH=FILE (a bench_targeted_dropout built from an earlier commit; by default
# the one apps/gpu-bundle.sh packed with BASELINE_COMMIT), the bench stage also times that
# binary's fused kernel right after ours: an A/B of a kernel change on one machine in one call.
# Each bench_variant_NAME that apps/gpu-bundle.sh packed (BENCH_VARIANTS: this tree with other
# nvcc flags) is timed the same way, in BENCH_VARIANTS' order and before the baseline, on the
# cases VARIANT_FILTER picks (a Google Benchmark filter; by default the placements the knobs
# act on, on four shape sets).
# Each section of the summary says at how many seconds into the run it was written.
# SECONDS is the whole script's budget (default 540): a stage gets what is left, and one that
# cannot start in time is skipped and says so. A 15-minute device lease (start-up included) fits
# one call under an outer timeout of 600 s, so that this script ends first and its logs come
# back: e.g. tests,sanitizer,bench,peer,ncu with SECONDS 540 (speed and profile add about 150 s
# more than that leaves).
#
# Binaries: a carried bundle (.gpu/, made by apps/gpu-bundle.sh) when present, else a build/
# made here with cmake. cuDNN and cuBLAS come from the machine (the CUDA toolkit or PyTorch's
# nvidia-* packages).
set -uo pipefail
out=${1:?usage: apps/gpu-check.sh OUTDIR [STAGES] [SECONDS]}
stages=${2:-tests,bench,peer,speed,sanitizer}
budget=${3:-540}
cd "$(dirname "$0")/.."
root=$(pwd)
start=$SECONDS
logs="$out/logs"
mkdir -p "$logs"
summary="$out/summary.md"
: > "$summary"
say() { echo "$*" | tee -a "$summary"; }
left() { echo $((budget - (SECONDS - start))); }
# A section of the summary, with the seconds since the start at which it was written, so that
# the next call's stage budgets can be planned from this one's.
heading() { say ""; say "## $* [at $((SECONDS - start)) s]"; }
want() { [[ ",$stages," == *",$1,"* ]]; }
# Runs a stage if at least $1 seconds are left; the stage gets min($2, left - 10) seconds.
# A third argument keeps that many seconds more back for the stages after it.
stage_limit() {
  local need=$1 cap=$2 l
  l=$(($(left) - 10 - ${3:-0}))
  ((l < need)) && return 1
  echo $((l < cap ? l : cap))
}

# --- binaries and libraries --------------------------------------------------------------
if [ -f .gpu/tdrop-bin.tar.xz ]; then
  # A fresh folder: a warm machine may hold an earlier bundle's binaries (a stale baseline).
  rm -rf /tmp/tdrop && mkdir -p /tmp/tdrop && tar -C /tmp/tdrop -xJf .gpu/tdrop-bin.tar.xz ||
    { say "cannot unpack .gpu/tdrop-bin.tar.xz"; exit 2; }
  bin=/tmp/tdrop/bin
  libdirs=/tmp/tdrop/lib
  data=$root/.gpu/data
  peer=$root/.gpu/torch_td.py
  # A baseline bench packed by gpu-bundle.sh (BASELINE_COMMIT there) is the default A/B.
  if [ -z "${BASELINE_BENCH:-}" ] && [ -x $bin/bench_baseline ]; then
    BASELINE_BENCH=$bin/bench_baseline
    BASELINE_COMMIT=$(cat .gpu/baseline_commit.txt 2>/dev/null || echo unknown)
  fi
else
  if [ ! -x build/tests/tdrop_tests ]; then
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > "$logs/configure.log" 2>&1 &&
      cmake --build build > "$logs/build.log" 2>&1 || { say "build failed (logs/build.log)"; }
  fi
  bin=/tmp/tdrop/bin
  rm -rf /tmp/tdrop && mkdir -p $bin && cp build/tdrop build/tests/tdrop_tests build/bench/bench_targeted_dropout \
    build/bench/bench_step_kernels $bin/
  libdirs=
  data=${TDROP_DATA_DIR:-/usr/share/datasets/fashion-mnist}
  peer=${TDROP_PEER:-}
fi
for d in $(python3 - <<'EOF' 2>/dev/null
import importlib, os
for m in ("nvidia.cudnn", "nvidia.cublas", "nvidia.cu13", "nvidia.cuda_runtime"):
    try:
        p = importlib.import_module(m)
        for root in list(getattr(p, "__path__", [])):
            if os.path.isdir(os.path.join(root, "lib")): print(os.path.join(root, "lib"))
    except Exception:
        pass
EOF
); do libdirs="$libdirs:$d"; done
libdirs=${libdirs#:}
# No empty entries: an empty one would search the current directory.
export LD_LIBRARY_PATH="${libdirs:+$libdirs:}/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TDROP_TEST_BINARY_DIR=$bin TDROP_DATA_DIR=$data TDROP_PYTHON=python3
{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(cat .gpu/commit.txt 2>/dev/null || git rev-parse HEAD 2>/dev/null)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  nvcc --version | tail -1
  python3 -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())'
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
} > "$logs/machine.txt" 2>&1
ldd $bin/tdrop_tests >> "$logs/machine.txt" 2>&1
say "# tdrop GPU check"
say '```'; cat "$logs/machine.txt" | head -6 | tee -a "$summary"; say '```'
if ldd $bin/tdrop_tests | grep -q "not found"; then say "missing libraries:"; ldd $bin/tdrop_tests | grep "not found" | tee -a "$summary"; fi
status=0

# --- compute-sanitizer, in the background while the tests run (neither is timed) --------
san_tools=()
if want sanitizer && tsan=$(stage_limit 40 90); then
  # memcheck: every targeted-dropout kernel, batch norm, the multi-tensor SGD update and the
  # warp-per-row kernels (softmax, layer norm, cross-entropy) with batched GEMM; racecheck: the
  # targeted-dropout kernels (their shared-memory stage, histograms and scans) and batch norm
  # (block sums, the last block of a channel reading the others' partials) on small shapes;
  # synccheck: the group rows' named barriers (bar.sync 1 and 2 over 128 threads), which
  # racecheck does not judge, and the block barriers of the register select, the prefetch
  # kernel and the long rows' window.
  declare -A san_filter=(
    [memcheck-0]='CudaTargetedDropout.Fused*:CudaTargetedDropout.Grouped*:Cuda/CudaOps.CpuAndCudaAgree/sgd*'
    [memcheck-1]='CudaBatchNorm2d.*:CudaTargetedDropout.Unfused*:CudaTargetedDropout.NonFinite*:CudaTargetedDropout.MaskGrad*:CudaTargetedDropout.LongRows*:CudaTargetedDropout.Unaligned*'
    [memcheck-2]='Cuda/CudaOps.CpuAndCudaAgree/softmax*:Cuda/CudaOps.CpuAndCudaAgree/layer_norm*:Cuda/CudaOps.CpuAndCudaAgree/bmm*:Cuda/CudaOps.CpuAndCudaAgree/cross_entropy*:CudaOpsCrossEntropy.*:CudaOpsFill.*'
    [racecheck-0]='CudaTargetedDropout.GroupedLaunchMixes*:CudaTargetedDropout.NonFinite*:CudaTargetedDropout.MaskGrad*'
    [racecheck-1]='CudaTargetedDropout.FusedWeightModeMatches*'
    [racecheck-5]='CudaTargetedDropout.FusedWeightModeBlockRows*'
    [racecheck-6]='CudaTargetedDropout.FusedGroupRowsSmallLaunch'
    [racecheck-7]='CudaTargetedDropout.FusedRegisterSelectSmallLaunch'
    [racecheck-8]='CudaTargetedDropout.FusedPrefetchedSmallLaunch:CudaTargetedDropout.FusedWindowSmallLaunch'
    [racecheck-2]='CudaTargetedDropout.FusedUnit*'
    [racecheck-3]='CudaTargetedDropout.UnfusedSmallOddShapes'
    [racecheck-4]='CudaBatchNorm2d.MisalignedView*:CudaBatchNorm2d.FusedEpilogue*:CudaBatchNorm2d.Evaluation*'
    [synccheck-0]='CudaTargetedDropout.FusedGroupRowsSmallLaunch:CudaTargetedDropout.FusedRegisterSelectSmallLaunch:CudaTargetedDropout.FusedPrefetchedSmallLaunch:CudaTargetedDropout.FusedWindowSmallLaunch'
  )
  for key in "${!san_filter[@]}"; do
    san_tools+=("$key")
    # The exit status closes the log: a timeout (124), a crash or a missing tool shows there.
    ( OPENBLAS_NUM_THREADS=2 timeout "$tsan" compute-sanitizer --tool "${key%-*}" --error-exitcode 3 \
        --print-limit 20 $bin/tdrop_tests --gtest_filter="${san_filter[$key]}"
      echo "exit $?" ) > "$logs/sanitizer-$key.log" 2>&1 &
  done
elif want sanitizer; then say "sanitizer: skipped, out of time"; fi

# --- the test suite --------------------------------------------------------------------
if want tests && t=$(stage_limit 20 90); then  # the sanitizer jobs take as long anyway
  shards=16
  pids=()
  # Two OpenBLAS threads per shard: with one, the tests of work split over threads skip.
  for i in $(seq 0 $((shards - 1))); do
    GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$i OPENBLAS_NUM_THREADS=2 \
      timeout "$t" $bin/tdrop_tests --gtest_color=no > "$logs/tests-$i.log" 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  passed=$(grep -h "^\[  PASSED  \]" "$logs"/tests-*.log | awk '{s+=$4} END {print s+0}')
  failed=$(grep -h "^\[  FAILED  \] [0-9]" "$logs"/tests-*.log | awk '{s+=$4} END {print s+0}')
  skipped=$(grep -h "^\[  SKIPPED \] [0-9]" "$logs"/tests-*.log | awk '{s+=$4} END {print s+0}')
  unfinished=$(grep -L "^\[==========\] .* ran\." "$logs"/tests-*.log | wc -l)
  heading "tests: $passed passed, $failed failed, $skipped skipped, $unfinished shards did not finish"
  # A finished shard names each failure twice, once with its time: one line per test.
  grep -h "^\[  FAILED  \] [A-Za-z]" "$logs"/tests-*.log | sed 's/ ([0-9]* ms)$//' | sort -u |
    head -40 | tee -a "$summary"
  for f in $(grep -L "^\[==========\] .* ran\." "$logs"/tests-*.log); do
    say "unfinished $(basename "$f"): last started $(grep "^\[ RUN      \]" "$f" | tail -1)"
  done
  say "skipped (first 20):"
  grep -h "^\[  SKIPPED \] [A-Za-z]" "$logs"/tests-*.log | sed 's/ ([0-9]* ms)$//' | sort -u |
    head -20 | tee -a "$summary"
  ((failed > 0 || unfinished > 0)) && status=1
elif want tests; then say "tests: skipped, out of time"; fi

if ((${#san_tools[@]})); then
  wait
  heading "compute-sanitizer (targeted-dropout kernels, batch norm, SGD update)"
  for key in $(printf '%s\n' "${san_tools[@]}" | sort); do
    f="$logs/sanitizer-$key.log"
    say "$key: $(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$f" | tail -1) $(grep -E "^\[  PASSED  \]|^\[  FAILED  \] [0-9]" "$f" | tr '\n' ' ')$(tail -1 "$f")"
    # A skipped test (no GPU seen under the tool) was not checked: its job is not a pass.
    grep -q "ERROR SUMMARY: 0 errors\|RACECHECK SUMMARY: 0 hazards" "$f" && grep -qx "exit 0" "$f" &&
      ! grep -q "^\[  SKIPPED \] [0-9]" "$f" || status=1
  done
fi

# --- the benchmark and the PyTorch peer (same machine, same call) ----------------------
# The benchmarks took about 60 s on an H200 (before the forced placements were added): a 60 s
# box cut the JSON short, and the race table with it. The peer runs right after them, so that
# the race table does not wait on the A/B extras (baseline, variants, step kernels), which keep
# ncu's 120 seconds back when it is wanted.
if want bench && t=$(stage_limit 30 200); then
  timeout "$t" $bin/bench_targeted_dropout --benchmark_filter=cuda --benchmark_min_time=0.02 \
    --benchmark_out="$logs/bench_targeted_dropout.json" --benchmark_out_format=json \
    > "$logs/bench_targeted_dropout.txt" 2>&1 || status=1
  heading "bench_targeted_dropout (median_us, GBps at 8.125 B/weight, % of copy)"
  say '```'; grep -E "^cuda_|^---|^Benchmark" "$logs/bench_targeted_dropout.txt" | tee -a "$summary"; say '```'
elif want bench; then say "bench: skipped, out of time"; fi
if want peer && [ -f "$peer" ] && t=$(stage_limit 30 60); then
  PYTHONUNBUFFERED=1 timeout "$t" python3 "$peer" --repeats 15 --json "$logs/torch_td.jsonl" \
    > "$logs/torch_td.txt" 2>&1 || status=1
  heading "PyTorch peer (torch_td.py)"; say '```'; tee -a "$summary" < "$logs/torch_td.txt"; say '```'
  if [ -f "$logs/bench_targeted_dropout.json" ]; then
    heading "the race: fused, unfused and the fastest PyTorch variant per shape set"; say '```'
    python3 bench/race_table.py "$logs/bench_targeted_dropout.json" "$logs/torch_td.jsonl" 2>&1 |
      tee -a "$summary"
    say '```'
  fi
elif want peer; then say "peer: skipped (no script or out of time)"; fi
reserve=0
want ncu && reserve=120
if want bench && [ -f "$logs/bench_targeted_dropout.json" ]; then
  # Variants packed by gpu-bundle.sh (BENCH_VARIANTS): this tree built with other nvcc flags.
  # They come before the baseline: a knob's effect is news, the baseline's numbers were taken
  # before. By default each times Auto's placement and those a knob acts on (block rows, group
  # rows, the shared select, the prefetch kernel) on the sets where it matters, and `tall` (the
  # long rows' window) once (22 cases), so that several variants fit the time left after the
  # bench and the peer; VARIANT_FILTER widens or narrows it.
  variant_filter=${VARIANT_FILTER:-'^cuda_fused(_block_rows|_group_rows|_shared|_block_rows_shared|_prefetch)?/(mlp|resnet32|transformer|square|tall)/'}
  # In BENCH_VARIANTS' order (.gpu/variants.txt), so that the first named is timed first
  # when time runs short; any other packed variant after them.
  ordered=$( { awk '{print $1}' .gpu/variants.txt 2>/dev/null
               for vb in "$bin"/bench_variant_*; do echo "${vb##*/bench_variant_}"; done; } |
             awk '!seen[$0]++')
  for v in $ordered; do
    vb="$bin/bench_variant_$v"
    [ -x "$vb" ] || continue
    t=$(stage_limit 20 45 $reserve) || { say "variant $v: skipped, out of time"; continue; }
    flags=$(awk -v v="$v" '$1 == v {$1 = ""; print substr($0, 2)}' .gpu/variants.txt 2>/dev/null)
    timeout "$t" "$vb" --benchmark_filter="$variant_filter" --benchmark_min_time=0.02 \
      --benchmark_out="$logs/bench_variant_$v.json" --benchmark_out_format=json \
      > "$logs/bench_variant_$v.txt" 2>&1 || status=1
    heading "variant $v (${flags:-flags unknown}), fused, each placement"
    say '```'; grep -E "^cuda_" "$logs/bench_variant_$v.txt" | tee -a "$summary"; say '```'
  done
  if [ -n "${BASELINE_BENCH:-}" ] && t=$(stage_limit 20 40 $reserve); then
    timeout "$t" "$BASELINE_BENCH" --benchmark_filter='cuda_fused/' --benchmark_min_time=0.02 \
      --benchmark_out="$logs/bench_baseline.json" --benchmark_out_format=json \
      > "$logs/bench_baseline.txt" 2>&1 || status=1
    heading "baseline bench (BASELINE_BENCH, commit ${BASELINE_COMMIT:-unknown}), fused"
    say '```'; grep -E "^cuda_" "$logs/bench_baseline.txt" | tee -a "$summary"; say '```'
  elif [ -n "${BASELINE_BENCH:-}" ]; then say "baseline bench: skipped, out of time"; fi
  others=()
  for f in "$logs"/bench_variant_*.json; do
    [ -s "$f" ] && others+=("$(basename "$f" .json | sed 's/^bench_variant_//')=$f")
  done
  [ -s "$logs/bench_baseline.json" ] && others+=("baseline=$logs/bench_baseline.json")
  if ((${#others[@]})); then
    heading "the builds side by side: median µs (ratio to the default; below 1 is faster)"
    python3 bench/variant_table.py "$logs/bench_targeted_dropout.json" "${others[@]}" 2>&1 |
      tee -a "$summary"
  fi
  if [ -x $bin/bench_step_kernels ] && t=$(stage_limit 20 40 $reserve); then
    timeout "$t" $bin/bench_step_kernels --benchmark_filter=cuda --benchmark_min_time=0.02 \
      --benchmark_out="$logs/bench_step_kernels.json" --benchmark_out_format=json \
      > "$logs/bench_step_kernels.txt" 2>&1 || status=1
    heading "bench_step_kernels: ResNet-32 step kernels at batch 128 (median_us, GBps, % of copy)"
    say '```'; grep -E "^cuda/" "$logs/bench_step_kernels.txt" | tee -a "$summary"; say '```'
  fi
fi

# --- ResNet-32 training speed ------------------------------------------------------------
speed_end=$((start + budget))  # the speed stage sets its own end; until then, the script's
# Seconds for one run: at most 40, within both the script's budget and the speed stage's.
run_limit() {
  local t
  t=$(stage_limit 15 40) || return 1
  ((t = t < speed_end - SECONDS ? t : speed_end - SECONDS, t >= 15)) || return 1
  echo "$t"
}
speed_run() {  # name, extra tdrop args... (MODEL, default resnet32, picks the model)
  local name=$1 t; shift
  t=$(run_limit) || { say "tdrop $name: skipped, out of time"; return; }
  timeout "$t" $bin/tdrop train --model "${MODEL:-resnet32}" --device cuda --epochs 2 --no-progress \
    --data-dir "$data" --out "$logs/speed-$name" "$@" > "$logs/speed-$name.log" 2>&1
  # The share of the epoch the host spent waiting for the GPU: near 0 means host-bound.
  python3 -c "import json,sys; m=[json.loads(l) for l in open(sys.argv[1])][-1]; print('%-26s %8.0f images/s (epoch 2; host waited for the GPU %2.0f%% of it)' % (sys.argv[2], m['samples_per_second'], 100 * m.get('gpu_wait_seconds', 0) / m['seconds']))" \
    "$logs/speed-$name/metrics.jsonl" "tdrop $name" 2>/dev/null | tee -a "$summary" ||
    say "tdrop $name: failed (logs/speed-$name.log)"
}
torch_run() {  # name, extra resnet32_torch.py args...
  local name=$1 t; shift
  t=$(run_limit) || { say "pytorch $name: skipped, out of time"; return; }
  timeout "$t" python3 bench/resnet32_torch.py "$@" > "$logs/speed-torch-$name.json" 2>> "$logs/speed-torch.err"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('%-26s %8.0f images/s (%.2f ms/step)' % (sys.argv[2], r['images_per_s'], r['ms_per_step']))" \
    "$logs/speed-torch-$name.json" "pytorch $name" 2>/dev/null | tee -a "$summary" ||
    say "pytorch $name: failed (logs/speed-torch.err)"
}
if want speed && t=$(stage_limit 30 150); then
  speed_end=$((SECONDS + t))
  heading "ResNet-32 training on 1x32x32 (200 steps per epoch at batch 128; TD weight g=0.5 a=0.5)"; say '```'
  speed_run none-b128 --train-limit 25600
  torch_run b128 --batch 128
  torch_run b128-heuristic --batch 128 --no-benchmark
  speed_run td-fused-b128 --train-limit 25600 --td weight --td-gamma 0.5 --td-alpha 0.5 --td-impl fused
  torch_run td-b128 --batch 128 --td
  speed_run td-unfused-b128 --train-limit 25600 --td weight --td-gamma 0.5 --td-alpha 0.5 --td-impl unfused
  speed_run none-b128-nondet --train-limit 25600 --cudnn-nondeterministic
  speed_run none-b512 --batch-size 512  # all 60000 images: 117 steps per epoch
  torch_run b512 --batch 512
  # The Transformer of the zoo (Fashion-MNIST 28x28, 49 tokens), without and with TD.
  MODEL=transformer speed_run transformer-b128 --train-limit 25600 --optimizer adam --lr 0.001
  MODEL=transformer speed_run transformer-td-b128 --train-limit 25600 --optimizer adam --lr 0.001 \
    --td weight --td-gamma 0.5 --td-alpha 0.5
  say '```'
  speed_end=$((start + budget))
elif want speed; then say "speed: skipped, out of time"; fi

# --- Nsight Compute on the fused kernel -------------------------------------------------
if want ncu && t=$(stage_limit 60 120); then  # five ncu runs of t/5: less is no profile
  # Where the fused kernel's time goes: speed of light, occupancy, issue rate, warp stall
  # reasons and shared-memory pressure, for a long-row set (block per row, with the register and
  # the shared select, and prefetched), ResNet-32 (warp per row) and `tall` (rows too long to
  # stage: the window's DRAM traffic).
  sections=(--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats
            --section ComputeWorkloadAnalysis --section InstructionStats --section MemoryWorkloadAnalysis)
  # What a warp waits on, in cycles per issued instruction by reason (these sections print no
  # breakdown on the command line): barrier, short scoreboard (shared memory), long scoreboard
  # (global), wait (fixed latency), MIO throttle (shared atomics and shuffles), ...
  stalls=(--metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio$')
  for target in cuda_fused/square cuda_fused_shared/square cuda_fused_prefetch/square \
                cuda_fused/resnet32 cuda_fused/tall; do
    name=${target//\//-}
    timeout $((t / 5)) ncu --clock-control none -k regex:td_weight_ -c 1 "${sections[@]}" \
      "${stalls[@]}" $bin/bench_targeted_dropout --benchmark_filter="^$target/" \
      --benchmark_min_time=0.01 > "$logs/ncu-$name.txt" 2>&1
    heading "ncu td_weight_*_kernel, $target (logs/ncu-$name.txt)"; say '```'
    grep -E "Duration|DRAM Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|Block Size|Grid Size|L2 Hit|Compute \(SM\) Throughput|Executed Ipc Active|Issue Slots Busy|Executed Instructions  |Warp Cycles Per Issued|Local Memory Spilling|Shared Memory|Bank Conflicts" \
      "$logs/ncu-$name.txt" | cut -c1-220 | head -40 | tee -a "$summary"
    say "stall reasons, cycles per issued instruction (the largest 8):"
    awk '$1 ~ /^smsp__average_warps_issue_stalled_/ {r = $1; sub(/^smsp__average_warps_issue_stalled_/, "", r)
         sub(/_per_issue_active\.ratio$/, "", r); printf "  %-22s %s\n", r, $NF}' "$logs/ncu-$name.txt" |
      sort -k2 -g -r | head -8 | tee -a "$summary"
    say '```'
  done
  cuobjdump --dump-resource-usage $bin/bench_targeted_dropout 2>/dev/null | grep -A1 td_ > "$logs/resource-usage.txt"
  # The SASS of the fused kernel file, for counting instructions per pass where no GPU is at
  # hand (no disassembler is needed to read it later).
  cuobjdump -sass $bin/bench_targeted_dropout 2>/dev/null |
    awk '/Function : /{keep = /td_weight_|block_select|register_select|short_row/} keep' |
    gzip > "$logs/sass-td-fused.txt.gz"
elif want ncu; then say "ncu: skipped, out of time"; fi

# --- where a ResNet-32 training step spends GPU time ----------------------------------------
# The step's wall time comes from the speed stage's fused run; without a speed stage (profile
# alone), that run first. (After a speed stage whose run failed, a rerun into its folder would
# be refused and overwrite the failure's log, so none is made.)
if want profile && ! want speed; then
  say ""; say '```'
  speed_run td-fused-b128 --train-limit 25600 --td weight --td-gamma 0.5 --td-alpha 0.5 --td-impl fused
  say '```'
fi
if want profile && t=$(stage_limit 40 120); then
  prof=(--model resnet32 --device cuda --epochs 1 --train-limit 12800 --no-progress
        --data-dir "$data" --td weight --td-gamma 0.5 --td-alpha 0.5 --out "$logs/profile-run")
  if command -v nsys > /dev/null; then
    TDROP_LOG_CONV_PLANS=1 timeout "$t" nsys profile -t cuda -o "$logs/r32-step" $bin/tdrop train "${prof[@]}" \
      > "$logs/profile.log" 2>&1
    nsys stats -r cuda_gpu_kern_sum --format csv -o "$logs/r32-step" "$logs/r32-step.nsys-rep" \
      >> "$logs/profile.log" 2>&1
    csvfile=$(ls "$logs"/r32-step*kern_sum*.csv 2>/dev/null | head -1)
    rm -f "$logs"/r32-step.nsys-rep "$logs"/r32-step.sqlite
  else  # some 2000 kernels from step 30 or later, after cuDNN's algorithm search
    TDROP_LOG_CONV_PLANS=1 timeout "$t" ncu --clock-control none --metrics gpu__time_duration.sum --csv \
      --launch-skip 12000 --launch-count 2000 $bin/tdrop train "${prof[@]}" \
      > "$logs/r32-step-ncu.csv" 2> "$logs/profile.log"
    csvfile=$logs/r32-step-ncu.csv
  fi
  step_ms=$(python3 -c "import json,sys; m=json.loads(open(sys.argv[1]).readlines()[-1]); print(128e3 / m['samples_per_second'])" \
    "$logs/speed-td-fused-b128/metrics.jsonl" 2>/dev/null)
  heading "ResNet-32 step profile, batch 128, TD fused (logs/profile.log)"; say '```'
  python3 bench/step_profile.py "$csvfile" ${step_ms:+--step-ms "$step_ms"} 2>&1 | tee -a "$summary"
  say '```'
  heading "cuDNN algorithms per convolution shape (TDROP_LOG_CONV_PLANS)"; say '```'
  grep -o "conv2d plan: .*" "$logs/profile.log" | sort -u | tee -a "$summary"
  say '```'
elif want profile; then say "profile: skipped, out of time"; fi

# --- the ResNet-32 reproduction ---------------------------------------------------------
if want train && t=$(stage_limit 120 600); then
  t_train=$((t - 120))  # the two prune sweeps get the rest
  # Without TRAIN_EPOCHS, as many epochs as fit: three runs share the GPU, each assumed to get
  # 40% of the solo speed measured by the speed stage (60000 training + 10000 test images/epoch).
  epochs=${TRAIN_EPOCHS:-$(python3 -c "import json,sys; ips=json.loads(open(sys.argv[1]).readlines()[-1])['samples_per_second']; print(max(1, min(30, int(0.4 * ips * (int(sys.argv[2]) - 30) / 70000))))" "$logs/speed-none-b128/metrics.jsonl" "$t_train" 2>/dev/null || echo 5)}
  common=(--model resnet32 --device cuda --epochs "$epochs" --no-progress --data-dir "$data" --lr 0.1)
  timeout "$t_train" $bin/tdrop train "${common[@]}" --out "$logs/r32-none" \
    --plot "$logs/r32-none-curves.png" > "$logs/r32-none.log" 2>&1 &
  timeout "$t_train" $bin/tdrop train "${common[@]}" --td weight --td-gamma 0.5 --td-alpha 0.5 \
    --out "$logs/r32-td50" --plot "$logs/r32-td50-curves.png" > "$logs/r32-td50.log" 2>&1 &
  timeout "$t_train" $bin/tdrop train "${common[@]}" --td weight --td-gamma 0.99 --td-alpha 0.99 \
    --td-ramp --out "$logs/r32-ramp99" --plot "$logs/r32-ramp99-curves.png" > "$logs/r32-ramp99.log" 2>&1 &
  wait
  heading "ResNet-32 on Fashion-MNIST 32x32, $epochs epochs, 3 runs side by side"; say '```'
  tail -n 2 "$logs"/r32-*.log | tee -a "$summary"
  ckpts=()
  for r in none td50 ramp99; do
    [ -f "$logs/r32-$r/model.safetensors" ] && ckpts+=(--checkpoint "$logs/r32-$r/model.safetensors")
  done
  if ((${#ckpts[@]})); then
    timeout 50 $bin/tdrop prune "${ckpts[@]}" --mode weight --device cuda --data-dir "$data" \
      --fractions 0,0.25,0.5,0.75,0.9,0.95,0.98,0.99 --csv "$logs/prune-resnet32.csv" \
      --plot "$logs/prune-resnet32.png" 2>&1 | tee "$logs/prune-resnet32.txt" | tee -a "$summary"
    # Again with each batch norm's statistics re-estimated after pruning.
    timeout 60 $bin/tdrop prune "${ckpts[@]}" --mode weight --device cuda --data-dir "$data" \
      --fractions 0,0.25,0.5,0.75,0.9,0.95,0.98,0.99 --bn-recalibrate 50 \
      --csv "$logs/prune-resnet32-bn50.csv" --plot "$logs/prune-resnet32-bn50.png" 2>&1 |
      tee "$logs/prune-resnet32-bn50.txt" | tee -a "$summary"
  fi
  say '```'
elif want train; then say "train: skipped, out of time"; fi

say ""; say "total $((SECONDS - start)) s, status $status"
cp "$summary" "$logs/"
# Checkpoints stay behind: the logs, metrics, tables and plots come back.
tar -C "$out" --exclude='*.safetensors' -czf "$out/logs.tar.gz" logs && rm -rf "$logs"
exit $status
