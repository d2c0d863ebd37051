// The engine accumulates gradients with an in-place add that lives in kernels/. kernels/
// registers it here so core/ stays free of op code.
#pragma once
#include "core/tensor.h"

namespace tdrop {
using GradAccumulateFn = void (*)(Tensor& acc, const Tensor& g);
GradAccumulateFn& grad_accumulate_hook();
}  // namespace tdrop
