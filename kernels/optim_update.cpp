#include "kernels/optim_update.h"

#include <cmath>

namespace tdrop {

void sgd_update_cpu(const Tensor& w, const Tensor& g, const Tensor& buf, SgdParams p,
                    bool first_step) {
  float* pw = w.data<float>();
  const float* pg = g.data<float>();
  float* pb = p.momentum != 0.0f ? buf.data<float>() : nullptr;
  const int64_t n = w.numel();
  for (int64_t i = 0; i < n; ++i) {
    float gi = pg[i] + p.weight_decay * pw[i];
    if (pb) {
      pb[i] = first_step ? gi : p.momentum * pb[i] + gi;
      gi = p.nesterov ? gi + p.momentum * pb[i] : pb[i];
    }
    pw[i] -= p.lr * gi;
  }
}

void adam_update_cpu(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v,
                     AdamParams p) {
  float* pw = w.data<float>();
  const float* pg = g.data<float>();
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  const int64_t n = w.numel();
  const auto [bc1, bc2] = adam_bias_correction(p);
  for (int64_t i = 0; i < n; ++i) {
    float gi = pg[i];
    if (p.decoupled) pw[i] -= p.lr * p.weight_decay * pw[i];
    else gi += p.weight_decay * pw[i];
    pm[i] = p.beta1 * pm[i] + (1.0f - p.beta1) * gi;
    pv[i] = p.beta2 * pv[i] + (1.0f - p.beta2) * gi * gi;
    const float mh = pm[i] / bc1, vh = pv[i] / bc2;
    pw[i] -= p.lr * mh / (std::sqrt(vh) + p.eps);
  }
}

}  // namespace tdrop
