// The engine accumulates gradients with an in-place add that lives in kernels/. kernels/
// registers it here so core/ stays free of op code.
#pragma once
#include "core/tensor.h"

namespace tdrop {
// acc += g in place (a leaf's .grad).
using GradAccumulateFn = void (*)(Tensor& acc, const Tensor& g);
GradAccumulateFn& grad_accumulate_hook();
// a + g as a new tensor (gradients between nodes, which are never written in place).
using GradSumFn = Tensor (*)(const Tensor& a, const Tensor& g);
GradSumFn& grad_sum_hook();
}  // namespace tdrop
