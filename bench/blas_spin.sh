#!/usr/bin/env bash
# How long OpenBLAS's idle workers spin (OPENBLAS_THREAD_TIMEOUT, log2 of cycles) against CPU
# training speed: ResNet-32 on the first 2560 Fashion-MNIST images and the MLP (LeNet-300-100)
# with and without targeted dropout, each setting run ROUNDS times, the settings interleaved so
# that a noisy neighbour hits them alike. Prints, per run and as the median per setting, the
# training images/s of the last epoch and the CPU seconds (user + system) the whole command
# took: a spinning worker burns CPU time even where a quiet machine hides it in the wall time.
#
#   bench/blas_spin.sh [ROUNDS] [SETTINGS]     (defaults 3 and "28 16"; ~4 min per round, 2 cores)
#
# 28 is OpenBLAS's own default (about 0.1 s), 16 what tdrop sets when the variable is unset
# (apps/blas_kernels.h). It builds nothing: build first (cmake --build build).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${1:-3}"
SETTINGS="${2:-28 16}"
TDROP_BIN="${TDROP_BIN:-build/tdrop}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "blas_spin: ROUNDS must be a positive integer, got '$ROUNDS'" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "blas_spin: /usr/bin/time not found; apt-get install time" >&2; exit 2; }
[[ -x "$TDROP_BIN" ]] || { echo "blas_spin: $TDROP_BIN not found; build first: cmake --build build" >&2; exit 2; }

TMP="$(mktemp -d -t tdrop_spin.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT

# "IMAGES_PER_S CPU_S": the run's last epoch line's images/s and the command's user + system time.
rate() {
  /usr/bin/time -f '%U %S' -o "$TMP/time" "$TDROP_BIN" train --device cpu --no-progress \
    --overwrite --out "$TMP/run" "$@" > "$TMP/log" 2>&1
  echo "$(grep -E '^epoch' "$TMP/log" | tail -1 | grep -oE '[0-9]+ images/s' | cut -d' ' -f1)" \
    "$(awk '{printf "%.1f", $1 + $2}' "$TMP/time")"
}

declare -A RATES CPU
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), load $(cut -d' ' -f1 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  for s in $SETTINGS; do
    export OPENBLAS_THREAD_TIMEOUT="$s"
    read -r r32 r32_cpu <<< "$(rate --model resnet32 --epochs 1 --train-limit 2560)"
    read -r mlp mlp_cpu <<< "$(rate --model mlp --epochs 2)"
    read -r td td_cpu <<< "$(rate --model mlp --epochs 2 --td weight --td-gamma 0.75 --td-alpha 0.66)"
    echo "round $round  spin 2^$s  images/s (CPU s): resnet32 $r32 ($r32_cpu)  mlp $mlp ($mlp_cpu)  mlp-td $td ($td_cpu)"
    RATES[$s,r32]+="$r32 " RATES[$s,mlp]+="$mlp " RATES[$s,td]+="$td "
    CPU[$s,r32]+="$r32_cpu " CPU[$s,mlp]+="$mlp_cpu " CPU[$s,td]+="$td_cpu "
  done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
cell() { echo "$(median <<< "${RATES[$1,$2]}") ($(median <<< "${CPU[$1,$2]}"))"; }
echo
echo "median over $ROUNDS rounds: training images/s of the last epoch (CPU seconds of the command)"
printf '%-8s %16s %16s %16s\n' spin resnet32 mlp mlp-td
for s in $SETTINGS; do
  printf '%-8s %16s %16s %16s\n' "2^$s" "$(cell "$s" r32)" "$(cell "$s" mlp)" "$(cell "$s" td)"
done
