#include "kernels/layer_norm.h"

#include <cmath>

#include "core/parallel.h"

// Rows are independent, so they are split over the CPU threads with the same bits.
namespace tdrop {
namespace {

template <class T>
void forward_typed(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps,
                   const Tensor& y, const Tensor& xhat, const Tensor& rstd) {
  const int64_t d = x.shape().back(), rows = last_axis_rows(x.shape());
  const T* px = static_cast<const T*>(x.raw_data());
  const T* g = static_cast<const T*>(gamma.raw_data());
  const T* b = static_cast<const T*>(beta.raw_data());
  T* py = static_cast<T*>(y.raw_data());
  T* ph = static_cast<T*>(xhat.raw_data());
  T* pr = static_cast<T*>(rstd.raw_data());
  parallel_for(rows, grain_for(d), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* row = px + r * d;
      T sum = 0;
      for (int64_t j = 0; j < d; ++j) sum += row[j];
      const T mean = sum / static_cast<T>(d);
      T sq = 0;
      for (int64_t j = 0; j < d; ++j) sq += (row[j] - mean) * (row[j] - mean);
      const T rs = T(1) / std::sqrt(sq / static_cast<T>(d) + static_cast<T>(eps));
      pr[r] = rs;
      for (int64_t j = 0; j < d; ++j) {
        const T h = (row[j] - mean) * rs;
        ph[r * d + j] = h;
        py[r * d + j] = h * g[j] + b[j];
      }
    }
  });
}

template <class T>
void backward_typed(const Tensor& g_xhat, const Tensor& xhat, const Tensor& rstd,
                    const Tensor& gx) {
  const int64_t d = xhat.shape().back(), rows = last_axis_rows(xhat.shape());
  const T* pg = static_cast<const T*>(g_xhat.raw_data());
  const T* ph = static_cast<const T*>(xhat.raw_data());
  const T* pr = static_cast<const T*>(rstd.raw_data());
  T* po = static_cast<T*>(gx.raw_data());
  parallel_for(rows, grain_for(d), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T sg = 0, sgh = 0;
      for (int64_t j = 0; j < d; ++j) {
        sg += pg[r * d + j];
        sgh += pg[r * d + j] * ph[r * d + j];
      }
      const T mg = sg / static_cast<T>(d), mgh = sgh / static_cast<T>(d);
      for (int64_t j = 0; j < d; ++j)
        po[r * d + j] = pr[r] * (pg[r * d + j] - mg - ph[r * d + j] * mgh);
    }
  });
}

}  // namespace

void layer_norm_forward_cpu(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps,
                            const Tensor& y, const Tensor& xhat, const Tensor& rstd) {
  if (x.dtype() == DType::F32) forward_typed<float>(x, gamma, beta, eps, y, xhat, rstd);
  else forward_typed<double>(x, gamma, beta, eps, y, xhat, rstd);
}

void layer_norm_backward_cpu(const Tensor& g_xhat, const Tensor& xhat, const Tensor& rstd,
                             const Tensor& gx) {
  if (xhat.dtype() == DType::F32) backward_typed<float>(g_xhat, xhat, rstd, gx);
  else backward_typed<double>(g_xhat, xhat, rstd, gx);
}

}  // namespace tdrop
