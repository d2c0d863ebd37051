// Spatial pooling on NCHW activations: max pooling (remembering each window's argmax for the
// backward pass), average pooling (padded zeros count towards the average, PyTorch's default
// count_include_pad), and global average pooling [N, C, H, W] -> [N, C].
// The CPU and CUDA versions add the same terms in the same order, so max/avg pooling agree bit
// for bit; global average pooling sums in double on both.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace tdrop {

struct Pool2dParams {
  int64_t kernel_h = 2, kernel_w = 2;
  int64_t stride_h = 2, stride_w = 2;
  int64_t pad_h = 0, pad_w = 0;  // on each side; at most half the kernel

  // Square window; stride 0 means "equal to the kernel" (non-overlapping windows).
  static Pool2dParams square(int64_t kernel, int64_t stride = 0, int64_t pad = 0) {
    const int64_t s = stride == 0 ? kernel : stride;
    return {kernel, kernel, s, s, pad, pad};
  }
};

// [N, C, Ho, Wo] with Ho = (H + 2*pad_h - kernel_h) / stride_h + 1 (floor), likewise Wo; throws
// naming `op` for a bad input rank, bad parameters or an empty output.
Shape pool2d_output_shape(const Shape& x, const Pool2dParams& p, const char* op);

// x [N, C, H, W] contiguous; y [N, C, Ho, Wo]; argmax I64 [N, C, Ho, Wo] holds the position
// h * W + w of each window's maximum inside its plane (the first one on ties; NaN wins).
void max_pool2d_forward_cpu(const Tensor& x, const Pool2dParams& p, const Tensor& y,
                            const Tensor& argmax);
void max_pool2d_forward_cuda(const Tensor& x, const Pool2dParams& p, const Tensor& y,
                             const Tensor& argmax);
// gx [N, C, H, W] = the sum of gy over the windows whose maximum each pixel was.
void max_pool2d_backward_cpu(const Tensor& gy, const Tensor& argmax, const Pool2dParams& p,
                             const Tensor& gx);
void max_pool2d_backward_cuda(const Tensor& gy, const Tensor& argmax, const Pool2dParams& p,
                              const Tensor& gx);

void avg_pool2d_forward_cpu(const Tensor& x, const Pool2dParams& p, const Tensor& y);
void avg_pool2d_forward_cuda(const Tensor& x, const Pool2dParams& p, const Tensor& y);
void avg_pool2d_backward_cpu(const Tensor& gy, const Pool2dParams& p, const Tensor& gx);
void avg_pool2d_backward_cuda(const Tensor& gy, const Pool2dParams& p, const Tensor& gx);

// y [N, C] = mean of x [N, C, H, W] over H and W; gx = gy / (H * W) broadcast back.
void global_avg_pool_forward_cpu(const Tensor& x, const Tensor& y);
void global_avg_pool_forward_cuda(const Tensor& x, const Tensor& y);
void global_avg_pool_backward_cpu(const Tensor& gy, const Tensor& gx);
void global_avg_pool_backward_cuda(const Tensor& gy, const Tensor& gx);

}  // namespace tdrop
