// Fused, numerically stable log-softmax + negative log-likelihood over the rows of logits.
// Forward writes each row's loss and its softmax (reused by backward, so exp is computed once).
#pragma once
#include <string>

#include "core/tensor.h"

namespace tdrop {

// logits [N, C] contiguous float; labels I64 [N] in [0, C). losses [N], probs [N, C].
// Throws naming the first bad label. The CUDA version checks on the device; reading its verdict
// back makes the host wait for the GPU, so with `bad_row` it returns the verdict instead: a
// one-element I64 device tensor holding the first bad row, or -1. The caller must look at it
// before trusting the losses: a row with a bad label gets loss 0 and probabilities 0 (so a zero
// gradient), defined values that training may run on until the verdict is read.
void cross_entropy_forward_cpu(const Tensor& logits, const Tensor& labels, const Tensor& losses,
                               const Tensor& probs);
void cross_entropy_forward_cuda(const Tensor& logits, const Tensor& labels, const Tensor& losses,
                                const Tensor& probs, Tensor* bad_row = nullptr);
// The error for label `label` at row `row` of logits of shape `logits`.
std::string cross_entropy_label_error(int64_t label, int64_t row, const Shape& logits);
// grad_logits = (probs - onehot(labels)) * scale, with scale = g_loss / N for the gradient
// g_loss of the mean loss. The CUDA version reads g_loss (one element, probs' dtype) on the
// device, so the backward pass never waits for it.
void cross_entropy_backward_cpu(const Tensor& probs, const Tensor& labels, double scale,
                                const Tensor& grad_logits);
void cross_entropy_backward_cuda(const Tensor& probs, const Tensor& labels, const Tensor& g_loss,
                                 const Tensor& grad_logits);

}  // namespace tdrop
