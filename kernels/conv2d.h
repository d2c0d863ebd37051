// 2-D convolution (cross-correlation, as in PyTorch and cuDNN) on NCHW activations with weights
// [out, in/groups, kh, kw]: forward and the three backward products. CPU: im2col + OpenBLAS GEMM
// (conv2d.cpp). CUDA: cuDNN with fp32 (FMA) math and deterministic algorithms (conv2d.cu), so the
// two agree within fp32 rounding.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace tdrop {

struct Conv2dParams {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;  // zero padding on each side
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;

  // Square stride/padding/dilation, the common case.
  static Conv2dParams square(int64_t stride, int64_t pad, int64_t dilation = 1,
                             int64_t groups = 1) {
    return {stride, stride, pad, pad, dilation, dilation, groups};
  }
};

// Output shape [N, out, Ho, Wo] of x [N, C, H, W] convolved with w [out, C/groups, kh, kw];
// throws naming `op` and both shapes when they do not fit together or the output would be empty.
Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dParams& p, const char* op);

// All tensors contiguous, one floating dtype, on the function's device; `bias` [out] may be
// undefined. Outputs are overwritten.
void conv2d_forward_cpu(const Tensor& x, const Tensor& w, const Tensor& bias,
                        const Conv2dParams& p, const Tensor& y);
void conv2d_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& bias,
                         const Conv2dParams& p, const Tensor& y);
// gx = dLoss/dx from gy = dLoss/dy.
void conv2d_backward_data_cpu(const Tensor& gy, const Tensor& w, const Conv2dParams& p,
                              const Tensor& gx);
void conv2d_backward_data_cuda(const Tensor& gy, const Tensor& w, const Conv2dParams& p,
                               const Tensor& gx);
// gw = dLoss/dw.
void conv2d_backward_filter_cpu(const Tensor& gy, const Tensor& x, const Conv2dParams& p,
                                const Tensor& gw);
void conv2d_backward_filter_cuda(const Tensor& gy, const Tensor& x, const Conv2dParams& p,
                                 const Tensor& gw);
// Whether the CUDA path may use cuDNN algorithms that are not deterministic (they add partial
// results with atomics, so the last bits can differ run to run). Off by default; PyTorch allows
// them unless torch.use_deterministic_algorithms is set. Takes effect for shapes planned later.
void set_conv2d_nondeterministic(bool allow);

// gb[c] = sum of gy over n, h, w.
void conv2d_backward_bias_cpu(const Tensor& gy, const Tensor& gb);
void conv2d_backward_bias_cuda(const Tensor& gy, const Tensor& gb);

}  // namespace tdrop
