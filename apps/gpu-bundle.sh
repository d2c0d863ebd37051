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
# BASELINE_COMMIT=REV also builds bench_targeted_dropout at that commit (from a temporary git
# worktree, with the build's CUDA flags, once per commit into build-baseline/REV) and packs it as
# bench_baseline, which gpu-check.sh's bench stage times beside the current kernels.
# BENCH_VARIANTS="NAME:FLAG[,FLAG...] ..." also builds bench_targeted_dropout from this tree
# with those nvcc flags added (into build-variant/NAME) and packs each as bench_variant_NAME, for
# the bench stage to time beside the defaults: compile-time knobs compared in one call, e.g.
# BENCH_VARIANTS="blocks5:-DTDROP_TD_MIN_BLOCKS_BLOCK_ROWS=5 warps4:-DTDROP_TD_MIN_BLOCKS_WARP_ROWS=4".
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
bundle=${2:-.gpu}
peer=${3:-}
data=${TDROP_DATA_DIR:-/usr/share/datasets/fashion-mnist}
bins="tdrop tests/tdrop_tests bench/bench_targeted_dropout bench/bench_step_kernels"
# The binaries must be those of the tree whose commit the bundle records: bring the build up to
# date first (nothing to do when it is).
[ -f "$build/build.ninja" ] || [ -f "$build/Makefile" ] ||
  { echo "gpu-bundle: $build is not a configured build (see the cmake line above)" >&2; exit 2; }
cmake --build "$build" || { echo "gpu-bundle: $build does not build" >&2; exit 2; }
for f in $bins; do
  [ -x "$build/$f" ] || { echo "gpu-bundle: $build/$f not built" >&2; exit 2; }
done
# The baseline and the variants first (the baseline cached per commit under build-baseline/),
# so a failure there leaves any previous bundle in place. Both get the current build's CUDA
# flags, so that they are timed alike.
cuda_flags=$(sed -n 's/^CMAKE_CUDA_FLAGS:STRING=//p' "$build/CMakeCache.txt")
baseline=""
if [ -n "${BASELINE_COMMIT:-}" ]; then
  rev=$(git rev-parse --verify "$BASELINE_COMMIT^{commit}")
  baseline=build-baseline/$rev/bench/bench_targeted_dropout
  if [ ! -x "$baseline" ]; then
    tree=$(mktemp -d -t tdrop_baseline.XXXXXX)
    trap 'git worktree remove --force "$tree" 2> /dev/null; rm -rf "$tree"' EXIT
    git worktree add --detach "$tree" "$rev" > /dev/null
    log=build-baseline/$rev.log
    mkdir -p build-baseline
    echo "gpu-bundle: building bench_targeted_dropout at $rev (log: $log)"
    if ! { cmake -S "$tree" -B "build-baseline/$rev" -G Ninja -DCMAKE_BUILD_TYPE=Release \
             -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_FLAGS="$cuda_flags" &&
           cmake --build "build-baseline/$rev" --target bench_targeted_dropout; } > "$log" 2>&1; then
      tail -30 "$log" >&2
      echo "gpu-bundle: the baseline at $rev did not build" >&2
      exit 2
    fi
    git worktree remove --force "$tree"
    trap - EXIT
  fi
fi
variants=()
for spec in ${BENCH_VARIANTS:-}; do
  name=${spec%%:*}
  [[ "$spec" == *:* && "$name" =~ ^[A-Za-z0-9_-]+$ ]] ||
    { echo "gpu-bundle: BENCH_VARIANTS entry '$spec' is not NAME:FLAG[,FLAG...]" >&2; exit 2; }
  flags=${spec#*:}
  flags=${flags//,/ }
  log=build-variant/$name.log
  mkdir -p build-variant
  echo "gpu-bundle: building bench_targeted_dropout with $flags (log: $log)"
  if ! { cmake -S . -B "build-variant/$name" -G Ninja -DCMAKE_BUILD_TYPE=Release \
           -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_FLAGS="$cuda_flags $flags" &&
         cmake --build "build-variant/$name" --target bench_targeted_dropout; } > "$log" 2>&1; then
    tail -30 "$log" >&2
    echo "gpu-bundle: the variant $name did not build" >&2
    exit 2
  fi
  variants+=("$name:$flags")
done
rm -rf "$bundle"
mkdir -p "$bundle/data"
stage=$(mktemp -d -t tdrop_bundle.XXXXXX)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
# Debug sections go; symbols stay, so sanitizer and profiler backtraces name functions.
for f in $bins; do
  strip --strip-debug -o "$stage/bin/$(basename "$f")" "$build/$f"
done
# The non-system, non-CUDA libraries the binaries load (ldd names them here).
for f in $bins; do ldd "$build/$f"; done |
  awk '/=> \//{print $3}' | grep -E 'openblas|gfortran|quadmath|benchmark|boost_context' | sort -u |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
if [ -n "$baseline" ]; then
  strip --strip-debug -o "$stage/bin/bench_baseline" "$baseline"
  echo "$rev" > "$bundle/baseline_commit.txt"
fi
for v in ${variants[@]+"${variants[@]}"}; do
  strip --strip-debug -o "$stage/bin/bench_variant_${v%%:*}" "build-variant/${v%%:*}/bench/bench_targeted_dropout"
  echo "${v%%:*} ${v#*:}" >> "$bundle/variants.txt"
done
tar -C "$stage" -cJf "$bundle/tdrop-bin.tar.xz" bin lib
cp "$data"/*-ubyte.gz "$bundle/data/"
[ -n "$peer" ] && cp "$peer" "$bundle/torch_td.py"
# What the binaries were built from; "-dirty" when the tree had uncommitted changes.
git describe --always --dirty --abbrev=40 > "$bundle/commit.txt" 2>/dev/null || true
du -sh "$bundle"/* | sed 's/^/gpu-bundle: /'
