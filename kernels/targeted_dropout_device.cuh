// Device building blocks shared by the fused and unfused targeted-dropout paths.
#pragma once
#include <cuda_runtime.h>

#include "kernels/targeted_dropout.h"

namespace tdrop::td_device {

constexpr int kThreads = 256;  // every targeted-dropout kernel uses 256-thread blocks
constexpr int kWarps = kThreads / 32;
static_assert(kThreads == kNormLanes, "one norm lane per thread");

// Inclusive prefix sum of v over the warp. All lanes must call it.
__device__ __forceinline__ unsigned warp_inclusive_scan(unsigned v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned y = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += y;
  }
  return v;
}

// Inclusive prefix sum of v over the block; *total receives the block-wide sum.
// `scratch` is kWarps ints of shared memory. All threads must call it. kReusable: it ends with a
// barrier, so that the next call may write scratch; a caller whose own next barrier comes
// before any other write to scratch passes false and saves one.
template <bool kReusable = true>
__device__ __forceinline__ unsigned block_inclusive_scan(unsigned v, unsigned* scratch,
                                                         unsigned* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_inclusive_scan(v);
  if (lane == 31) scratch[warp] = v;
  __syncthreads();
  unsigned before = 0, all = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    const unsigned s = scratch[w];
    before += w < warp ? s : 0u;
    all += s;
  }
  if constexpr (kReusable) __syncthreads();  // scratch may be reused by the next call
  *total = all;
  return v + before;
}

// The canonical squared norm of one row (see unit_norm_sq_reference): thread t sums entries
// t, t+256, ... in order in double, then a fixed pairwise tree over the 256 partial sums.
// `lanes` is kThreads doubles of shared memory. Returns the norm in every thread. Sets
// *nonfinite when the row holds an Inf/NaN.
__device__ __forceinline__ double row_norm_sq(const float* row, int64_t n, double* lanes,
                                              int* nonfinite) {
  double acc = 0.0;
  bool bad = false;
  for (int64_t j = threadIdx.x; j < n; j += kThreads) {
    const float x = row[j];
    bad |= magnitude_key(__float_as_uint(x)) >= kNonFiniteKey;
    const double d = x;
    acc = __dadd_rn(acc, __dmul_rn(d, d));  // no contraction: the reference rounds the same way
  }
  if (bad) atomicExch(nonfinite, 1);
  lanes[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) lanes[threadIdx.x] = __dadd_rn(lanes[threadIdx.x], lanes[threadIdx.x + s]);
    __syncthreads();
  }
  const double r = lanes[0];
  __syncthreads();
  return r;
}

// Philox draw for element/row `index` of a task: true = dropped.
__device__ __forceinline__ bool td_draw(uint64_t seed, uint64_t stream, uint64_t index,
                                        uint32_t threshold) {
  return bernoulli_from_u32(philox_u32(seed, stream, index), threshold);
}

}  // namespace tdrop::td_device
