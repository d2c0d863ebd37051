#include "kernels/shortcut.h"

#include <cstring>

namespace tdrop {
namespace {

template <class T>
void forward_typed(const Tensor& x, int64_t s, const Tensor& y) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t co = y.size(1), ho = y.size(2), wo = y.size(3);
  const T* px = x.data<T>();
  T* py = y.data<T>();
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ch = 0; ch < co; ++ch) {
      T* out = py + (b * co + ch) * ho * wo;
      if (ch >= c) {
        std::memset(out, 0, sizeof(T) * static_cast<size_t>(ho * wo));
        continue;
      }
      const T* in = px + (b * c + ch) * h * w;
      for (int64_t i = 0; i < ho; ++i)
        for (int64_t j = 0; j < wo; ++j) out[i * wo + j] = in[i * s * w + j * s];
    }
}

template <class T>
void backward_typed(const Tensor& gy, int64_t s, const Tensor& gx) {
  const int64_t n = gx.size(0), c = gx.size(1), h = gx.size(2), w = gx.size(3);
  const int64_t co = gy.size(1), ho = gy.size(2), wo = gy.size(3);
  const T* pg = gy.data<T>();
  T* out = gx.data<T>();
  std::memset(out, 0, sizeof(T) * static_cast<size_t>(gx.numel()));
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ch = 0; ch < c; ++ch) {
      const T* in = pg + (b * co + ch) * ho * wo;
      T* dst = out + (b * c + ch) * h * w;
      for (int64_t i = 0; i < ho; ++i)
        for (int64_t j = 0; j < wo; ++j) dst[i * s * w + j * s] = in[i * wo + j];
    }
}

}  // namespace

void pad_channels_subsample_cpu(const Tensor& x, int64_t stride, const Tensor& y) {
  if (x.dtype() == DType::F32) forward_typed<float>(x, stride, y);
  else forward_typed<double>(x, stride, y);
}

void pad_channels_subsample_backward_cpu(const Tensor& gy, int64_t stride, const Tensor& gx) {
  if (gy.dtype() == DType::F32) backward_typed<float>(gy, stride, gx);
  else backward_typed<double>(gy, stride, gx);
}

}  // namespace tdrop
