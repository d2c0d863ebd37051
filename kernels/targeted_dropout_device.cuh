// Device building blocks shared by the fused and unfused targeted-dropout paths.
#pragma once
#ifndef TDROP_CUDA_EMULATED
#include <cuda_runtime.h>
#endif

#include "kernels/targeted_dropout.h"

namespace tdrop::td_device {

// The two things below are written differently for the host emulation of CUDA that runs the
// fused kernels in the CPU tests (tests/cuda_emulator.h, which defines TDROP_CUDA_EMULATED):
// its shared memory is not a language feature, and it has no PTX.

// The launch's dynamic shared memory, 16-byte aligned.
template <class T>
__device__ __forceinline__ T* dynamic_shared() {
#ifdef TDROP_CUDA_EMULATED
  return static_cast<T*>(cuda_emu::dynamic_shared_memory());
#else
  extern __shared__ __align__(16) unsigned char td_dynamic_shared[];
  return reinterpret_cast<T*>(td_dynamic_shared);
#endif
}

// Waits until kCount threads (whole warps) of the block have reached named barrier kId (1 to
// 15; 0 is __syncthreads'). The id is an immediate: with the id in a register, ptxas reserves
// all 16 named barriers for the kernel, a per-SM resource that can cap blocks per SM.
template <int kId, int kCount>
__device__ __forceinline__ void named_barrier() {
  static_assert(kId > 0 && kId < 16 && kCount % 32 == 0, "a named barrier of whole warps");
#ifdef TDROP_CUDA_EMULATED
  cuda_emu::named_barrier(kId, kCount);
#else
  asm volatile("bar.sync %0, %1;" ::"n"(kId), "n"(kCount) : "memory");
#endif
}

// Copies 16 bytes from global to shared memory without passing them through registers
// (cp.async, sm_80 and later; a plain load and store before): the copies a thread starts before
// copies_commit() form a group, and copies_wait<N>() returns once all but its newest N groups
// have landed, in this thread's view (other threads see them after a barrier). Both addresses
// are 16-byte aligned. Earlier devices copy at once, which the same waits and barriers order.
__device__ __forceinline__ void copy16_async(uint32_t* smem, const uint32_t* gmem) {
#ifdef TDROP_CUDA_EMULATED
  cuda_emu::copy_async(smem, gmem, 16);
#elif __CUDA_ARCH__ >= 800
  const unsigned to = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(to), "l"(gmem) : "memory");
#else
  *reinterpret_cast<uint4*>(smem) = *reinterpret_cast<const uint4*>(gmem);
#endif
}
__device__ __forceinline__ void copies_commit() {
#ifdef TDROP_CUDA_EMULATED
  cuda_emu::copy_async_commit();
#elif __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int kPending>
__device__ __forceinline__ void copies_wait() {
#ifdef TDROP_CUDA_EMULATED
  cuda_emu::copy_async_wait(kPending);
#elif __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
#endif
}

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
// *nonfinite to `mark` when the row holds an Inf/NaN.
__device__ __forceinline__ double row_norm_sq(const float* row, int64_t n, double* lanes,
                                              int* nonfinite, int mark) {
  double acc = 0.0;
  bool bad = false;
  for (int64_t j = threadIdx.x; j < n; j += kThreads) {
    const float x = row[j];
    bad |= magnitude_key(__float_as_uint(x)) >= kNonFiniteKey;
    const double d = x;
    acc = __dadd_rn(acc, __dmul_rn(d, d));  // no contraction: the reference rounds the same way
  }
  if (bad) atomicExch(nonfinite, mark);
  lanes[threadIdx.x] = acc;
  __syncthreads();
  for (unsigned s = kThreads / 2; s > 0; s >>= 1) {
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
