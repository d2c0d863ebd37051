#!/usr/bin/env bash
# The main job: train LeNet-300-100 on Fashion-MNIST twice, without and with targeted dropout
# (weight mode, gamma 0.75, alpha 0.66), prune both by 0..99% of their targeted weights, and
# print the side-by-side table; the chart goes to runs/prune-mlp.png.
# Usage: apps/main-job.sh [extra tdrop train options for both runs, e.g. --device cpu]
# Each run replaces the one a previous main job left in runs/ (--overwrite).
set -euo pipefail
cd "$(dirname "$0")/.."
./build/tdrop train --model mlp --out runs/mlp-baseline --overwrite "$@"
./build/tdrop train --model mlp --td weight --td-gamma 0.75 --td-alpha 0.66 --out runs/mlp-td \
  --overwrite "$@"
./build/tdrop prune --checkpoint runs/mlp-baseline/model.safetensors --label "no dropout" \
  --checkpoint runs/mlp-td/model.safetensors --label "targeted dropout g=0.75 a=0.66" \
  --mode weight --fractions 0,0.25,0.5,0.75,0.9,0.95,0.99 \
  --csv runs/prune-mlp.csv --plot runs/prune-mlp.png
