#!/usr/bin/env bash
# Installs what tdrop needs from Debian's packages. The CUDA toolkit (nvcc, cuBLAS, cuDNN) is
# expected under /usr/local/cuda already; CUDA code builds without a GPU and runs only with one.
# Extra package names given as arguments are installed too (e.g. the fuzzers' clang).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
packages=(cmake ninja-build g++ pkg-config libopenblas-dev libgtest-dev libgmock-dev
          libbenchmark-dev nlohmann-json3-dev libcli11-dev zlib1g-dev dataset-fashion-mnist
          python3-matplotlib libboost-context-dev "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup: the CUDA toolkit (nvcc) was not found under /usr/local/cuda; install it first" >&2
  exit 1
fi
echo "setup: all dependencies present"
