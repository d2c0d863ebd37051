#!/usr/bin/env bash
# The CPU race: one MLP (LeNet-300-100) epoch at batch 128 in tdrop versus PyTorch on this machine.
#
#   bench/mlp_epoch_race.sh [EPOCHS]          (default 3; about a minute on 2 cores)
#
# Runs `tdrop train --model mlp --device cpu` and bench/mlp_epoch_torch.py (Debian python3-torch,
# same model, init family, recipe, batch size, data and normalisation; as many threads as
# OpenBLAS uses) for the same number of epochs, then prints a table with each framework's median
# epoch time, samples/s and final test accuracy, and the ratio. It builds nothing: build first
# (cmake -S . -B build -G Ninja && cmake --build build). Exits 1 when tdrop is not faster.
#
# Environment: TDROP_BIN (default build/tdrop), PYTHON (default /usr/bin/python3),
# TDROP_DATA_DIR (default /usr/share/datasets/fashion-mnist), THREADS (default: all CPUs; sets
# both OPENBLAS_NUM_THREADS for tdrop and torch.set_num_threads for PyTorch, so they stay equal).
set -euo pipefail
cd "$(dirname "$0")/.."

EPOCHS="${1:-3}"
TDROP_BIN="${TDROP_BIN:-build/tdrop}"
PYTHON="${PYTHON:-/usr/bin/python3}"
DATA_DIR="${TDROP_DATA_DIR:-/usr/share/datasets/fashion-mnist}"
THREADS="${THREADS:-$(nproc)}"

[[ "$EPOCHS" =~ ^[1-9][0-9]*$ ]] || { echo "mlp_epoch_race: EPOCHS must be a positive integer, got '$EPOCHS'" >&2; exit 2; }
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "mlp_epoch_race: THREADS must be a positive integer, got '$THREADS'" >&2; exit 2; }
[[ -x "$TDROP_BIN" ]] || { echo "mlp_epoch_race: $TDROP_BIN not found; build first: cmake -S . -B build -G Ninja && cmake --build build" >&2; exit 2; }
"$PYTHON" -c "import torch, numpy" 2>/dev/null || { echo "mlp_epoch_race: $PYTHON cannot import torch and numpy; apt-get install python3-torch python3-numpy" >&2; exit 2; }
[[ -f "$DATA_DIR/train-images-idx3-ubyte.gz" ]] || { echo "mlp_epoch_race: Fashion-MNIST not found in $DATA_DIR; apt-get install dataset-fashion-mnist" >&2; exit 2; }

TMP="$(mktemp -d -t tdrop_race.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT

echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), ${EPOCHS} epochs of 60000 images, batch 128"
LOAD="$(cut -d' ' -f1 /proc/loadavg)"
echo "load average before the race: $LOAD"
if "$PYTHON" -c "import os, sys; sys.exit(0 if float('$LOAD') > 0.5 * os.cpu_count() else 1)"; then
  echo "WARNING: the machine is busy; both frameworks (PyTorch's OpenMP threads especially) will be slowed and the ratio is not meaningful" >&2
fi
# tdrop runs OpenBLAS's AVX2 kernels on CPUs with AVX2 and FMA whatever the CPU model (see the
# README); Debian's PyTorch computes with OpenBLAS too, so it gets the same kernels here.
if [[ -z "${OPENBLAS_CORETYPE:-}" ]] && grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
  export OPENBLAS_CORETYPE=Haswell
fi
echo "BLAS kernels: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset, OpenBLAS picks} for both"
echo "threads: $THREADS for both (tdrop: OPENBLAS_NUM_THREADS=$THREADS; PyTorch: torch.set_num_threads($THREADS), os.cpu_count() = $(nproc), OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE})"
echo

echo "--- tdrop ---"
OPENBLAS_NUM_THREADS="$THREADS" "$TDROP_BIN" train --model mlp --epochs "$EPOCHS" --batch-size 128 --device cpu --no-progress \
  --data-dir "$DATA_DIR" --out "$TMP/tdrop_run"
echo
echo "--- pytorch ---"
# OpenMP's idle threads spin by default and then take the cores from OpenBLAS's (about 3x slower
# epochs on 2 cores); passive waiting is PyTorch's best setting here.
OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}" "$PYTHON" bench/mlp_epoch_torch.py --epochs "$EPOCHS" --batch-size 128 --data-dir "$DATA_DIR" \
  --threads "$THREADS" --json > "$TMP/torch.json"
echo

"$PYTHON" - "$TMP/tdrop_run/metrics.jsonl" "$TMP/torch.json" <<'EOF'
import json, statistics, sys
tdrop_epochs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
torch = json.load(open(sys.argv[2]))
rows = [
    ("tdrop", [e["seconds"] for e in tdrop_epochs], [e["samples_per_second"] for e in tdrop_epochs],
     tdrop_epochs[-1]["test_accuracy"]),
    (f"pytorch {torch['version']}", [e["seconds"] for e in torch["epochs"]],
     [e["samples_per_second"] for e in torch["epochs"]], torch["final_test_accuracy"]),
]
print(f"{'framework':<22} {'epoch s (median)':>16} {'samples/s':>10} {'test acc':>9}   per-epoch s")
med = {}
for name, secs, sps, acc in rows:
    med[name] = statistics.median(secs)
    per = " ".join(f"{s:.2f}" for s in secs)
    print(f"{name:<22} {med[name]:>16.2f} {statistics.median(sps):>10.0f} {100 * acc:>8.2f}%   {per}")
t, p = med["tdrop"], med[rows[1][0]]
ratio = p / t
print()
if ratio > 1:
    print(f"tdrop epoch is {ratio:.2f}x faster than PyTorch's (median {t:.2f} s vs {p:.2f} s)")
    sys.exit(0)
print(f"tdrop epoch is NOT faster than PyTorch's: ratio {ratio:.2f} (median {t:.2f} s vs {p:.2f} s)")
sys.exit(1)
EOF
