#!/usr/bin/env bash
# Builds the libFuzzer targets of the file readers (safetensors, IDX + Fashion-MNIST, CIFAR-10)
# with clang, AddressSanitizer and UndefinedBehaviorSanitizer, writes the seed corpus, runs each
# target for a bounded time, and prints per target the executions, crashes and exit status.
#
#   tests/fuzz/run-fuzzers.sh [SECONDS_PER_TARGET] [OUTDIR]
#
# SECONDS_PER_TARGET defaults to 60, OUTDIR to out/fuzz. Crash, leak, timeout and OOM inputs are
# kept in OUTDIR/artifacts, logs in OUTDIR/logs, and the corpus grown by each run in
# OUTDIR/corpus/<target> (a later run starts from it). FUZZ_TARGETS="idx cifar10" runs a subset;
# FUZZ_PARALLEL=N runs N targets at a time (default 1). Exits non-zero if any target found a
# problem. Needs Debian's clang and libclang-rt-14-dev (apt-get install clang libclang-rt-14-dev).
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_TARGET="${1:-60}"
OUTDIR="${2:-out/fuzz}"
TARGETS=(${FUZZ_TARGETS:-safetensors idx cifar10})
PARALLEL="${FUZZ_PARALLEL:-1}"
CXX="${FUZZ_CXX:-clang++}"

if ! command -v "$CXX" >/dev/null; then
  echo "run-fuzzers: $CXX not found; install clang and libclang-rt-14-dev" >&2
  exit 2
fi
mkdir -p "$OUTDIR"/{bin,artifacts,logs,corpus,seeds}
OUTDIR="$(cd "$OUTDIR" && pwd)"

# Only the parser sources (and the error messages they raise): no CUDA, no tensor library.
declare -A SOURCES=(
  [safetensors]="core/safetensors.cpp core/atomic_file.cpp core/json_parse.cpp core/error.cpp"
  [idx]="data/idx.cpp data/fashion_mnist.cpp core/error.cpp"
  [cifar10]="data/cifar10.cpp core/atomic_file.cpp core/error.cpp"
)
declare -A MAX_LEN=([safetensors]=16384 [idx]=16384 [cifar10]=16384)
FLAGS=(-std=c++20 -g -O1 -fno-omit-frame-pointer -I.)
SAN=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)

echo "run-fuzzers: building with $("$CXX" --version | head -n1)"
"$CXX" "${FLAGS[@]}" -fsanitize=address,undefined tests/fuzz/make_corpus.cpp \
  ${SOURCES[safetensors]} -lz -o "$OUTDIR/bin/make_corpus"
for t in "${TARGETS[@]}"; do
  [ -n "${SOURCES[$t]:-}" ] || { echo "run-fuzzers: unknown target $t" >&2; exit 2; }
  # shellcheck disable=SC2086
  "$CXX" "${FLAGS[@]}" "${SAN[@]}" "tests/fuzz/fuzz_$t.cpp" ${SOURCES[$t]} -lz \
    -o "$OUTDIR/bin/fuzz_$t" &
done
wait
for t in "${TARGETS[@]}"; do
  [ -x "$OUTDIR/bin/fuzz_$t" ] || { echo "run-fuzzers: building fuzz_$t failed" >&2; exit 2; }
done
rm -rf "$OUTDIR/seeds"
"$OUTDIR/bin/make_corpus" "$OUTDIR/seeds"

run_one() {
  local t="$1"
  mkdir -p "$OUTDIR/corpus/$t"
  local rc=0
  ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}" \
    "$OUTDIR/bin/fuzz_$t" -max_total_time="$SECONDS_PER_TARGET" -max_len="${MAX_LEN[$t]}" \
    -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$OUTDIR/artifacts/$t-" \
    "$OUTDIR/corpus/$t" "$OUTDIR/seeds/$t" >"$OUTDIR/logs/$t.log" 2>&1 || rc=$?
  echo "$rc" >"$OUTDIR/logs/$t.rc"
}

echo "run-fuzzers: ${#TARGETS[@]} target(s), ${SECONDS_PER_TARGET}s each, $PARALLEL at a time"
pids=()
for t in "${TARGETS[@]}"; do
  rm -f "$OUTDIR/artifacts/$t-"*
  run_one "$t" &
  pids+=("$!")
  if [ "${#pids[@]}" -ge "$PARALLEL" ]; then  # all targets run equally long: wait for the oldest
    wait "${pids[0]}" || true
    pids=("${pids[@]:1}")
  fi
done
wait

status=0
printf '%-12s %14s %8s %10s %6s\n' target executions exec/s artifacts exit
for t in "${TARGETS[@]}"; do
  log="$OUTDIR/logs/$t.log"
  rc="$(cat "$OUTDIR/logs/$t.rc")"
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)"
  speed="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)"
  artifacts="$(find "$OUTDIR/artifacts" -name "$t-*" -type f | wc -l)"
  printf '%-12s %14s %8s %10s %6s\n' "$t" "${execs:-?}" "${speed:-?}" "$artifacts" "$rc"
  if [ "$rc" -ne 0 ] || [ "$artifacts" -ne 0 ] || [ -z "$execs" ]; then
    status=1
    echo "run-fuzzers: $t found a problem; see $log and $OUTDIR/artifacts/$t-*" >&2
  fi
done
exit "$status"
