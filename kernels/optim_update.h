// Optimizer updates as single fused passes over (param, grad, state), float32.
#pragma once
#include <cmath>
#include <vector>

#include "core/tensor.h"

namespace tdrop {

struct SgdParams {
  float lr, momentum, weight_decay;
  bool nesterov;
};
// g' = g + wd*w; buf = momentum*buf + g' (buf starts as g' when first_step); step = nesterov ?
// g' + momentum*buf : buf; w -= lr*step. (PyTorch's SGD.)
void sgd_update_cpu(const Tensor& w, const Tensor& g, const Tensor& buf, SgdParams p,
                    bool first_step);
void sgd_update_cuda(const Tensor& w, const Tensor& g, const Tensor& buf, SgdParams p,
                     bool first_step);
// sgd_update_cuda for many parameters in one launch (the same arithmetic, element for element).
// Every tensor contiguous float32 on CUDA; buf[i] may be undefined when momentum == 0.
void sgd_update_multi_cuda(const std::vector<Tensor>& w, const std::vector<Tensor>& g,
                           const std::vector<Tensor>& buf, SgdParams p, bool first_step);

struct AdamParams {
  float lr, beta1, beta2, eps, weight_decay;
  bool decoupled;  // AdamW: w -= lr*wd*w; Adam: g += wd*w
  int64_t step;    // 1-based, for bias correction
};
// Adam's bias corrections 1 - beta1^step and 1 - beta2^step, worked out on the host by both
// updates, so that the CPU and CUDA paths divide by the same two floats.
struct AdamBiasCorrection {
  float bc1, bc2;
};
inline AdamBiasCorrection adam_bias_correction(const AdamParams& p) {
  return {1.0f - std::pow(p.beta1, static_cast<float>(p.step)),
          1.0f - std::pow(p.beta2, static_cast<float>(p.step))};
}
void adam_update_cpu(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v,
                     AdamParams p);
void adam_update_cuda(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v,
                      AdamParams p);

}  // namespace tdrop
