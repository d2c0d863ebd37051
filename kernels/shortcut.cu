// CUDA option-A shortcut: one thread per output element (forward) or per input element
// (backward), so every element is written exactly once and no zero-fill pass is needed.
#include <cstdint>

#include "core/cuda_check.h"
#include "kernels/shortcut.h"

namespace tdrop {
namespace {

constexpr int kThreads = 256;

struct Dims {
  int64_t c, h, w, co, ho, wo, stride;
};

Dims dims(const Tensor& x, const Tensor& y, int64_t stride) {
  return {x.size(1), x.size(2), x.size(3), y.size(1), y.size(2), y.size(3), stride};
}

template <class T>
__global__ void forward_kernel(const T* __restrict__ x, Dims d, T* __restrict__ y, int64_t total) {
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < total;
       o += (int64_t)gridDim.x * blockDim.x) {
    const int64_t j = o % d.wo, i = (o / d.wo) % d.ho, ch = (o / (d.wo * d.ho)) % d.co;
    const int64_t b = o / (d.wo * d.ho * d.co);
    y[o] = ch < d.c ? x[((b * d.c + ch) * d.h + i * d.stride) * d.w + j * d.stride] : T(0);
  }
}

template <class T>
__global__ void backward_kernel(const T* __restrict__ gy, Dims d, T* __restrict__ gx,
                                int64_t total) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < total;
       k += (int64_t)gridDim.x * blockDim.x) {
    const int64_t iw = k % d.w, ih = (k / d.w) % d.h, ch = (k / (d.w * d.h)) % d.c;
    const int64_t b = k / (d.w * d.h * d.c);
    const bool sampled = ih % d.stride == 0 && iw % d.stride == 0;
    gx[k] = sampled ? gy[((b * d.co + ch) * d.ho + ih / d.stride) * d.wo + iw / d.stride] : T(0);
  }
}

template <class T>
void forward_typed(const Tensor& x, int64_t stride, const Tensor& y) {
  const int64_t total = y.numel();
  if (total == 0) return;
  forward_kernel<T><<<cuda_blocks(total, kThreads), kThreads, 0, cuda_stream()>>>(
      x.data<T>(), dims(x, y, stride), y.data<T>(), total);
  TDROP_LAUNCH_CHECK("pad_channels_subsample forward_kernel");
}

template <class T>
void backward_typed(const Tensor& gy, int64_t stride, const Tensor& gx) {
  const int64_t total = gx.numel();
  if (total == 0) return;
  backward_kernel<T><<<cuda_blocks(total, kThreads), kThreads, 0, cuda_stream()>>>(
      gy.data<T>(), dims(gx, gy, stride), gx.data<T>(), total);
  TDROP_LAUNCH_CHECK("pad_channels_subsample backward_kernel");
}

}  // namespace

void pad_channels_subsample_cuda(const Tensor& x, int64_t stride, const Tensor& y) {
  if (x.dtype() == DType::F32) forward_typed<float>(x, stride, y);
  else forward_typed<double>(x, stride, y);
}

void pad_channels_subsample_backward_cuda(const Tensor& gy, int64_t stride, const Tensor& gx) {
  if (gy.dtype() == DType::F32) backward_typed<float>(gy, stride, gx);
  else backward_typed<double>(gy, stride, gx);
}

}  // namespace tdrop
