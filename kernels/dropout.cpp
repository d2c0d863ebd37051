#include "kernels/dropout.h"

#include "core/philox.h"

namespace tdrop {

namespace {
template <class T>
void dropout_typed(const Tensor& x, float p, uint64_t seed, uint64_t stream, const Tensor& out,
                   const Tensor& mask) {
  const int64_t n = x.numel();
  const T* px = static_cast<const T*>(x.raw_data());
  T* po = static_cast<T*>(out.raw_data());
  uint8_t* pm = mask.data<uint8_t>();
  const uint32_t thr = bernoulli_threshold(p);
  const T scale = p < 1.0f ? T(1) / (T(1) - T(p)) : T(0);
  for (int64_t i = 0; i < n; ++i) {
    const bool drop = bernoulli_from_u32(philox_u32(seed, stream, static_cast<uint64_t>(i)), thr);
    pm[i] = drop ? 0 : 1;
    po[i] = drop ? T(0) : px[i] * scale;
  }
}

template <class T>
void apply_mask_typed(const Tensor& g, const Tensor& mask, double scale, const Tensor& out) {
  const int64_t n = g.numel();
  const T* pg = static_cast<const T*>(g.raw_data());
  const uint8_t* pm = mask.data<uint8_t>();
  T* po = static_cast<T*>(out.raw_data());
  const T s = static_cast<T>(scale);
  for (int64_t i = 0; i < n; ++i) po[i] = pm[i] ? pg[i] * s : T(0);
}
}  // namespace

void dropout_cpu(const Tensor& x, float p, uint64_t seed, uint64_t stream, const Tensor& out,
                 const Tensor& mask_out) {
  if (x.dtype() == DType::F32) dropout_typed<float>(x, p, seed, stream, out, mask_out);
  else dropout_typed<double>(x, p, seed, stream, out, mask_out);
}

void apply_mask_cpu(const Tensor& g, const Tensor& mask, double scale, const Tensor& out) {
  if (g.dtype() == DType::F32) apply_mask_typed<float>(g, mask, scale, out);
  else apply_mask_typed<double>(g, mask, scale, out);
}

}  // namespace tdrop
