// Reductions: sum over a set of axes (mean is sum times 1/count), and argmax over one axis.
#pragma once
#include "core/tensor.h"

namespace tdrop {

// out has x's shape with reduced axes set to 1 (keepdim form), contiguous, same dtype as x.
// `reduce[d]` says whether axis d is reduced. Accumulates in double on CPU and CUDA.
void sum_axes_cpu(const Tensor& x, const std::vector<bool>& reduce, const Tensor& out);
void sum_axes_cuda(const Tensor& x, const std::vector<bool>& reduce, const Tensor& out);

// x is [rows, cols] contiguous; out is I64 [rows]: index of the largest value in each row
// (first one on ties; NaN counts as largest so it cannot hide).
void argmax_rows_cpu(const Tensor& x, const Tensor& out);
void argmax_rows_cuda(const Tensor& x, const Tensor& out);

}  // namespace tdrop
