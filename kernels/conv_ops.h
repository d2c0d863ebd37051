// The differentiable ops of convolutional networks. Each dispatches to the CPU or CUDA kernels
// of its family (conv2d, batch_norm, pool, shortcut) and, when an input requires a gradient,
// records a Node whose backward calls the family's backward kernels. Inputs must share one
// floating dtype and one device; non-contiguous inputs are accepted (copied once).
#pragma once
#include <cstdint>

#include "core/autograd.h"
#include "core/tensor.h"
#include "kernels/batch_norm.h"
#include "kernels/conv2d.h"
#include "kernels/pool.h"

namespace tdrop {

// x [N, C, H, W] (*) w [out, C/groups, kh, kw] + bias [out] (bias may be undefined)
// -> [N, out, Ho, Wo]. Cross-correlation, as in PyTorch.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p = {});

// Batch normalisation of x [N, C, H, W] with affine gamma, beta [C] (see kernels/batch_norm.h).
// In training the batch statistics are used and running_mean / running_var [C] are updated in
// place (they never require a gradient); in evaluation the running statistics are used.
// `then` fuses what follows into the output pass: relu(bn(x) + then.residual), bit-identical
// to relu(add(batch_norm2d(...), residual)); the residual (same shape as x) gets a gradient.
Tensor batch_norm2d(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                    const Tensor& running_mean, const Tensor& running_var, bool training,
                    double momentum = 0.1, double eps = 1e-5, const BnEpilogue& then = {});

// Pooling over H and W of x [N, C, H, W] (see kernels/pool.h).
Tensor max_pool2d(const Tensor& x, const Pool2dParams& p);
Tensor avg_pool2d(const Tensor& x, const Pool2dParams& p);
// [N, C, H, W] -> [N, C]: the mean of each channel plane.
Tensor global_avg_pool(const Tensor& x);

// ResNet option-A shortcut (kernels/shortcut.h): x [N, C, H, W] -> [N, out_channels,
// ceil(H/stride), ceil(W/stride)], the stride-th pixels of x followed by zero channels.
Tensor pad_channels_subsample(const Tensor& x, int64_t out_channels, int64_t stride);

}  // namespace tdrop
