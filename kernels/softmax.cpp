#include "kernels/softmax.h"

#include "core/parallel.h"

// Rows are independent, so they are split over the CPU threads with the same bits.
namespace tdrop {
namespace {

template <class T>
void forward_typed(const Tensor& x, const Tensor& y) {
  const int64_t n = x.shape().back(), rows = last_axis_rows(x.shape());
  const T* px = static_cast<const T*>(x.raw_data());
  T* py = static_cast<T*>(y.raw_data());
  parallel_for(rows, grain_for(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) softmax_row_cpu(px + r * n, py + r * n, n);
  });
}

template <class T>
void backward_typed(const Tensor& y, const Tensor& gy, const Tensor& gx) {
  const int64_t n = y.shape().back(), rows = last_axis_rows(y.shape());
  const T* py = static_cast<const T*>(y.raw_data());
  const T* pg = static_cast<const T*>(gy.raw_data());
  T* po = static_cast<T*>(gx.raw_data());
  parallel_for(rows, grain_for(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T dot = 0;
      for (int64_t j = 0; j < n; ++j) dot += pg[r * n + j] * py[r * n + j];
      for (int64_t j = 0; j < n; ++j) po[r * n + j] = py[r * n + j] * (pg[r * n + j] - dot);
    }
  });
}

}  // namespace

void softmax_forward_cpu(const Tensor& x, const Tensor& y) {
  if (x.dtype() == DType::F32) forward_typed<float>(x, y);
  else forward_typed<double>(x, y);
}

void softmax_backward_cpu(const Tensor& y, const Tensor& gy, const Tensor& gx) {
  if (y.dtype() == DType::F32) backward_typed<float>(y, gy, gx);
  else backward_typed<double>(y, gy, gx);
}

}  // namespace tdrop
