// CUDA softmax over the last axis: one warp per row, lanes striding over its columns, the max and
// the sums by warp shuffles (the formula of softmax.cpp, so results agree within rounding).
#include "core/cuda_check.h"
#include "kernels/softmax.h"
#include "kernels/warp_row_math.cuh"

namespace tdrop {
namespace {

using namespace warp_row;
constexpr int kThreads = 256;

template <class T>
__global__ void softmax_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows,
                                       int64_t n) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = (int64_t)gridDim.x * blockDim.x / kWarp;
  for (int64_t r = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / kWarp; r < rows;
       r += warps) {
    softmax_row(x + r * n, y + r * n, n, lane);
  }
}

template <class T>
__global__ void softmax_backward_kernel(const T* __restrict__ y, const T* __restrict__ gy,
                                        T* __restrict__ gx, int64_t rows, int64_t n) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = (int64_t)gridDim.x * blockDim.x / kWarp;
  for (int64_t r = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / kWarp; r < rows;
       r += warps) {
    T dot = 0;
    for (int64_t j = lane; j < n; j += kWarp) dot += gy[r * n + j] * y[r * n + j];
    dot = warp_sum_all(dot);
    for (int64_t j = lane; j < n; j += kWarp) gx[r * n + j] = y[r * n + j] * (gy[r * n + j] - dot);
  }
}

template <class T>
void forward_typed(const Tensor& x, const Tensor& y) {
  const int64_t rows = last_axis_rows(x.shape());
  if (rows == 0) return;
  softmax_forward_kernel<T><<<cuda_blocks(rows, kThreads / kWarp), kThreads, 0, cuda_stream()>>>(
      static_cast<const T*>(x.raw_data()), static_cast<T*>(y.raw_data()), rows, x.shape().back());
  TDROP_LAUNCH_CHECK("softmax_forward_kernel");
}

template <class T>
void backward_typed(const Tensor& y, const Tensor& gy, const Tensor& gx) {
  const int64_t rows = last_axis_rows(y.shape());
  if (rows == 0) return;
  softmax_backward_kernel<T><<<cuda_blocks(rows, kThreads / kWarp), kThreads, 0, cuda_stream()>>>(
      static_cast<const T*>(y.raw_data()), static_cast<const T*>(gy.raw_data()),
      static_cast<T*>(gx.raw_data()), rows, y.shape().back());
  TDROP_LAUNCH_CHECK("softmax_backward_kernel");
}

}  // namespace

void softmax_forward_cuda(const Tensor& x, const Tensor& y) {
  if (x.dtype() == DType::F32) forward_typed<float>(x, y);
  else forward_typed<double>(x, y);
}

void softmax_backward_cuda(const Tensor& y, const Tensor& gy, const Tensor& gx) {
  if (y.dtype() == DType::F32) backward_typed<float>(y, gy, gx);
  else backward_typed<double>(y, gy, gx);
}

}  // namespace tdrop
