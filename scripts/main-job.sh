#!/usr/bin/env bash
# The main job: train LeNet-300-100 on Fashion-MNIST and report its test accuracy.
# Usage: scripts/main-job.sh [extra tdrop train options...]
set -euo pipefail
cd "$(dirname "$0")/.."
./build/tdrop train --model mlp --dataset fashion-mnist --out runs/mlp "$@"
./build/tdrop eval --checkpoint runs/mlp/model.safetensors
