// Softmax over the last axis (attention weights), forward and backward.
#pragma once
#include "core/tensor.h"

namespace tdrop {

// x, y: contiguous [rows, n] float (any leading shape flattened). y = exp(x - max) / sum, with
// the max taken as cross_entropy takes it, so a row of one value gives exactly 1.
void softmax_forward_cpu(const Tensor& x, const Tensor& y);
void softmax_forward_cuda(const Tensor& x, const Tensor& y);
// gx = y * (gy - sum(gy * y)) row by row.
void softmax_backward_cpu(const Tensor& y, const Tensor& gy, const Tensor& gx);
void softmax_backward_cuda(const Tensor& y, const Tensor& gy, const Tensor& gx);

}  // namespace tdrop
