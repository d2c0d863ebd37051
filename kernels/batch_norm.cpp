#include "kernels/batch_norm.h"

#include <cmath>

namespace tdrop {
namespace {

struct Dims {
  int64_t n, c, hw;
};
Dims dims(const Tensor& x) { return {x.size(0), x.size(1), x.size(2) * x.size(3)}; }

template <class T>
void normalize(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
               const Tensor& invstd, const Tensor& y, const BnEpilogue& then) {
  const Dims d = dims(x);
  const T *px = x.data<T>(), *pg = gamma.data<T>(), *pb = beta.data<T>();
  const T *pm = mean.data<T>(), *pi = invstd.data<T>();
  const T* pr = then.residual.defined() ? then.residual.data<T>() : nullptr;
  T* py = y.data<T>();
  for (int64_t n = 0; n < d.n; ++n)
    for (int64_t c = 0; c < d.c; ++c) {
      const int64_t base = (n * d.c + c) * d.hw;
      for (int64_t i = 0; i < d.hw; ++i) {
        T v = (px[base + i] - pm[c]) * pi[c] * pg[c] + pb[c];
        if (pr != nullptr) v = v + pr[base + i];
        if (then.relu) v = v <= T(0) ? T(0) : v;  // as relu: NaN stays NaN
        py[base + i] = v;
      }
    }
}

template <class T>
void train_typed(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& rmean,
                 const Tensor& rvar, double momentum, double eps, const Tensor& y,
                 const Tensor& mean, const Tensor& invstd, const BnEpilogue& then) {
  const Dims d = dims(x);
  const double m = static_cast<double>(d.n * d.hw);
  const T* px = x.data<T>();
  T *prm = rmean.data<T>(), *prv = rvar.data<T>(), *pm = mean.data<T>(), *pi = invstd.data<T>();
  for (int64_t c = 0; c < d.c; ++c) {
    double sum = 0;
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.hw; ++i) sum += static_cast<double>(px[(n * d.c + c) * d.hw + i]);
    const double mu = sum / m;
    double sq = 0;  // second pass: no cancellation
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.hw; ++i) {
        const double v = static_cast<double>(px[(n * d.c + c) * d.hw + i]) - mu;
        sq += v * v;
      }
    const double var = sq / m;
    pm[c] = static_cast<T>(mu);
    pi[c] = static_cast<T>(1.0 / std::sqrt(var + eps));
    prm[c] = static_cast<T>((1.0 - momentum) * static_cast<double>(prm[c]) + momentum * mu);
    prv[c] = static_cast<T>((1.0 - momentum) * static_cast<double>(prv[c]) +
                            momentum * var * m / (m - 1.0));
  }
  normalize<T>(x, gamma, beta, mean, invstd, y, then);
}

template <class T>
void eval_typed(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& rmean,
                const Tensor& rvar, double eps, const Tensor& y, const Tensor& mean,
                const Tensor& invstd, const BnEpilogue& then) {
  const int64_t c = x.size(1);
  const T *prm = rmean.data<T>(), *prv = rvar.data<T>();
  T *pm = mean.data<T>(), *pi = invstd.data<T>();
  for (int64_t i = 0; i < c; ++i) {
    pm[i] = prm[i];
    pi[i] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(prv[i]) + eps));
  }
  normalize<T>(x, gamma, beta, mean, invstd, y, then);
}

template <class T>
void backward_typed(const Tensor& gy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                    const Tensor& invstd, bool batch_stats, const Tensor& gx,
                    const Tensor& ggamma, const Tensor& gbeta) {
  const Dims d = dims(x);
  const double m = static_cast<double>(d.n * d.hw);
  const T *pgy = gy.data<T>(), *px = x.data<T>(), *pg = gamma.data<T>();
  const T *pm = mean.data<T>(), *pi = invstd.data<T>();
  T *pgx = gx.data<T>(), *pgg = ggamma.data<T>(), *pgb = gbeta.data<T>();
  for (int64_t c = 0; c < d.c; ++c) {
    const double mu = static_cast<double>(pm[c]), is = static_cast<double>(pi[c]);
    double sum_gy = 0, sum_gy_xhat = 0;
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.hw; ++i) {
        const int64_t k = (n * d.c + c) * d.hw + i;
        sum_gy += static_cast<double>(pgy[k]);
        sum_gy_xhat += static_cast<double>(pgy[k]) * (static_cast<double>(px[k]) - mu) * is;
      }
    pgb[c] = static_cast<T>(sum_gy);
    pgg[c] = static_cast<T>(sum_gy_xhat);
    const double scale = static_cast<double>(pg[c]) * is;
    const double mean_gy = batch_stats ? sum_gy / m : 0.0;
    const double mean_gy_xhat = batch_stats ? sum_gy_xhat / m : 0.0;
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.hw; ++i) {
        const int64_t k = (n * d.c + c) * d.hw + i;
        const double xhat = (static_cast<double>(px[k]) - mu) * is;
        pgx[k] = static_cast<T>(scale * (static_cast<double>(pgy[k]) - mean_gy - xhat * mean_gy_xhat));
      }
  }
}

}  // namespace

void batch_norm2d_train_cpu(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var,
                            double momentum, double eps, const Tensor& y, const Tensor& mean,
                            const Tensor& invstd, const BnEpilogue& then) {
  if (x.dtype() == DType::F32)
    train_typed<float>(x, gamma, beta, running_mean, running_var, momentum, eps, y, mean, invstd,
                       then);
  else
    train_typed<double>(x, gamma, beta, running_mean, running_var, momentum, eps, y, mean,
                        invstd, then);
}

void batch_norm2d_eval_cpu(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                           const Tensor& running_mean, const Tensor& running_var, double eps,
                           const Tensor& y, const Tensor& mean, const Tensor& invstd,
                           const BnEpilogue& then) {
  if (x.dtype() == DType::F32)
    eval_typed<float>(x, gamma, beta, running_mean, running_var, eps, y, mean, invstd, then);
  else
    eval_typed<double>(x, gamma, beta, running_mean, running_var, eps, y, mean, invstd, then);
}

void batch_norm2d_backward_cpu(const Tensor& gy, const Tensor& x, const Tensor& gamma,
                               const Tensor& mean, const Tensor& invstd, bool batch_stats,
                               const Tensor& gx, const Tensor& ggamma, const Tensor& gbeta) {
  if (x.dtype() == DType::F32)
    backward_typed<float>(gy, x, gamma, mean, invstd, batch_stats, gx, ggamma, gbeta);
  else
    backward_typed<double>(gy, x, gamma, mean, invstd, batch_stats, gx, ggamma, gbeta);
}

}  // namespace tdrop
