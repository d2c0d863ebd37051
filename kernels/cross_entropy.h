// Fused, numerically stable log-softmax + negative log-likelihood over the rows of logits.
// Forward writes each row's loss and its softmax (reused by backward, so exp is computed once).
#pragma once
#include "core/tensor.h"

namespace tdrop {

// logits [N, C] contiguous float; labels I64 [N] in [0, C). losses [N], probs [N, C].
// Throws naming the first bad label (the CUDA version checks on the device and reports after).
void cross_entropy_forward_cpu(const Tensor& logits, const Tensor& labels, const Tensor& losses,
                               const Tensor& probs);
void cross_entropy_forward_cuda(const Tensor& logits, const Tensor& labels, const Tensor& losses,
                                const Tensor& probs);
// grad_logits = (probs - onehot(labels)) * scale.
void cross_entropy_backward_cpu(const Tensor& probs, const Tensor& labels, double scale,
                                const Tensor& grad_logits);
void cross_entropy_backward_cuda(const Tensor& probs, const Tensor& labels, double scale,
                                 const Tensor& grad_logits);

}  // namespace tdrop
