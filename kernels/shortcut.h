// The parameter-free shortcut of the CIFAR ResNets (He et al. 2016, option A): when a stage
// halves the resolution and widens the channels, the identity is taken at every stride-th pixel
// and the new channels are zeros appended after the existing ones:
//   y[n, c, i, j] = x[n, c, i*stride, j*stride] for c < C,  0 for C <= c < out_channels.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace tdrop {

// x [N, C, H, W] contiguous; y [N, out_channels, ceil(H/stride), ceil(W/stride)].
void pad_channels_subsample_cpu(const Tensor& x, int64_t stride, const Tensor& y);
void pad_channels_subsample_cuda(const Tensor& x, int64_t stride, const Tensor& y);
// gx [N, C, H, W]: gy at the sampled pixels of the first C channels, 0 elsewhere.
void pad_channels_subsample_backward_cpu(const Tensor& gy, int64_t stride, const Tensor& gx);
void pad_channels_subsample_backward_cuda(const Tensor& gy, int64_t stride, const Tensor& gx);

}  // namespace tdrop
