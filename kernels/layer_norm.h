// Layer normalisation over the last axis (Ba et al. 2016), as Transformers use it.
#pragma once
#include "core/tensor.h"

namespace tdrop {

// x, y, xhat: contiguous [rows, d] float (any leading shape flattened); gamma, beta: [d];
// rstd: [rows]. Per row: mean and biased variance in the tensor's type, rstd = 1/sqrt(var + eps),
// xhat = (x - mean) * rstd, y = xhat * gamma + beta. xhat and rstd are kept for backward.
void layer_norm_forward_cpu(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps,
                            const Tensor& y, const Tensor& xhat, const Tensor& rstd);
void layer_norm_forward_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps,
                             const Tensor& y, const Tensor& xhat, const Tensor& rstd);
// gx from g_xhat = gy * gamma: gx = rstd * (g_xhat - mean(g_xhat) - xhat * mean(g_xhat * xhat)).
void layer_norm_backward_cpu(const Tensor& g_xhat, const Tensor& xhat, const Tensor& rstd,
                             const Tensor& gx);
void layer_norm_backward_cuda(const Tensor& g_xhat, const Tensor& xhat, const Tensor& rstd,
                              const Tensor& gx);

}  // namespace tdrop
