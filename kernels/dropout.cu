// CUDA dropout: the CPU's masks bit for bit. Element i keeps or drops by Philox draw i of
// (seed, stream), decided in integers by bernoulli_from_u32, both shared with the CPU through
// core/philox.h.
#include <cstdint>

#include "core/cuda_check.h"
#include "core/philox.h"
#include "kernels/dropout.h"

namespace tdrop {
namespace {

constexpr int kThreads = 256;

// One thread per group of four elements: a single Philox call yields the draws for elements
// 4g .. 4g+3 (philox_u32(seed, stream, i) is lane i % 4 of block i / 4), so the generator runs
// once per four outputs instead of four times.
template <class T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ out,
                               uint8_t* __restrict__ mask, int64_t n, uint64_t seed,
                               uint64_t stream, uint32_t threshold, T scale) {
  const int64_t groups = (n + 3) / 4;
  for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g < groups;
       g += (int64_t)gridDim.x * blockDim.x) {
    const Philox4 r = philox_block(seed, stream, static_cast<uint64_t>(g));
    for (int k = 0; k < 4; ++k) {
      const int64_t i = g * 4 + k;
      if (i >= n) break;
      const bool drop = bernoulli_from_u32(r.v[k], threshold);
      mask[i] = drop ? 0 : 1;
      out[i] = drop ? T(0) : x[i] * scale;
    }
  }
}

// out = g * scale where the mask is set, 0 elsewhere: dropout's backward, and weight masks.
template <class T>
__global__ void apply_mask_kernel(const T* __restrict__ g, const uint8_t* __restrict__ mask,
                                  T scale, T* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = mask[i] ? g[i] * scale : T(0);
}

template <class T>
void dropout_typed(const Tensor& x, float p, uint64_t seed, uint64_t stream, const Tensor& out,
                   const Tensor& mask) {
  const int64_t n = x.numel();
  if (n == 0) return;
  const uint32_t thr = bernoulli_threshold(p);
  const T scale = p < 1.0f ? T(1) / (T(1) - T(p)) : T(0);  // the CPU's expression, on the host
  dropout_kernel<T><<<cuda_blocks((n + 3) / 4, kThreads), kThreads, 0, cuda_stream()>>>(
      static_cast<const T*>(x.raw_data()), static_cast<T*>(out.raw_data()), mask.data<uint8_t>(),
      n, seed, stream, thr, scale);
  TDROP_LAUNCH_CHECK("dropout_kernel");
}

template <class T>
void apply_mask_typed(const Tensor& g, const Tensor& mask, double scale, const Tensor& out) {
  const int64_t n = g.numel();
  if (n == 0) return;
  apply_mask_kernel<T><<<cuda_blocks(n, kThreads), kThreads, 0, cuda_stream()>>>(
      static_cast<const T*>(g.raw_data()), mask.data<uint8_t>(), static_cast<T>(scale),
      static_cast<T*>(out.raw_data()), n);
  TDROP_LAUNCH_CHECK("apply_mask_kernel");
}

}  // namespace

void dropout_cuda(const Tensor& x, float p, uint64_t seed, uint64_t stream, const Tensor& out,
                  const Tensor& mask_out) {
  if (x.dtype() == DType::F32) dropout_typed<float>(x, p, seed, stream, out, mask_out);
  else dropout_typed<double>(x, p, seed, stream, out, mask_out);
}

void apply_mask_cuda(const Tensor& g, const Tensor& mask, double scale, const Tensor& out) {
  if (g.dtype() == DType::F32) apply_mask_typed<float>(g, mask, scale, out);
  else apply_mask_typed<double>(g, mask, scale, out);
}

}  // namespace tdrop
