// CUDA layer normalisation over the last axis: one warp per row (rows are a Transformer's model
// width, tens to a few thousand entries), sums by warp shuffles; the formulas of layer_norm.cpp.
// gamma's and beta's gradients are column sums over rows, left to the reduction kernels.
#include "core/cuda_check.h"
#include "kernels/layer_norm.h"
#include "kernels/warp_row_math.cuh"

namespace tdrop {
namespace {

using namespace warp_row;
constexpr int kThreads = 256;

template <class T>
__global__ void layer_norm_forward_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                                          const T* __restrict__ beta, T eps, T* __restrict__ y,
                                          T* __restrict__ xhat, T* __restrict__ rstd,
                                          int64_t rows, int64_t d) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = (int64_t)gridDim.x * blockDim.x / kWarp;
  for (int64_t r = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / kWarp; r < rows;
       r += warps) {
    const T* row = x + r * d;
    T sum = 0;
    for (int64_t j = lane; j < d; j += kWarp) sum += row[j];
    const T mean = warp_sum_all(sum) / static_cast<T>(d);
    T sq = 0;
    for (int64_t j = lane; j < d; j += kWarp) sq += (row[j] - mean) * (row[j] - mean);
    const T rs = rsqrt_of(warp_sum_all(sq) / static_cast<T>(d) + eps);
    if (lane == 0) rstd[r] = rs;
    for (int64_t j = lane; j < d; j += kWarp) {
      const T h = (row[j] - mean) * rs;
      xhat[r * d + j] = h;
      y[r * d + j] = h * gamma[j] + beta[j];
    }
  }
}

template <class T>
__global__ void layer_norm_backward_kernel(const T* __restrict__ g, const T* __restrict__ xhat,
                                           const T* __restrict__ rstd, T* __restrict__ gx,
                                           int64_t rows, int64_t d) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = (int64_t)gridDim.x * blockDim.x / kWarp;
  for (int64_t r = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / kWarp; r < rows;
       r += warps) {
    T sg = 0, sgh = 0;
    for (int64_t j = lane; j < d; j += kWarp) {
      sg += g[r * d + j];
      sgh += g[r * d + j] * xhat[r * d + j];
    }
    const T mg = warp_sum_all(sg) / static_cast<T>(d), mgh = warp_sum_all(sgh) / static_cast<T>(d);
    const T rs = rstd[r];
    for (int64_t j = lane; j < d; j += kWarp)
      gx[r * d + j] = rs * (g[r * d + j] - mg - xhat[r * d + j] * mgh);
  }
}

template <class T>
void forward_typed(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps,
                   const Tensor& y, const Tensor& xhat, const Tensor& rstd) {
  const int64_t rows = last_axis_rows(x.shape());
  if (rows == 0) return;
  layer_norm_forward_kernel<T>
      <<<cuda_blocks(rows, kThreads / kWarp), kThreads, 0, cuda_stream()>>>(
          static_cast<const T*>(x.raw_data()), static_cast<const T*>(gamma.raw_data()),
          static_cast<const T*>(beta.raw_data()), static_cast<T>(eps),
          static_cast<T*>(y.raw_data()), static_cast<T*>(xhat.raw_data()),
          static_cast<T*>(rstd.raw_data()), rows, x.shape().back());
  TDROP_LAUNCH_CHECK("layer_norm_forward_kernel");
}

template <class T>
void backward_typed(const Tensor& g, const Tensor& xhat, const Tensor& rstd, const Tensor& gx) {
  const int64_t rows = last_axis_rows(xhat.shape());
  if (rows == 0) return;
  layer_norm_backward_kernel<T>
      <<<cuda_blocks(rows, kThreads / kWarp), kThreads, 0, cuda_stream()>>>(
          static_cast<const T*>(g.raw_data()), static_cast<const T*>(xhat.raw_data()),
          static_cast<const T*>(rstd.raw_data()), static_cast<T*>(gx.raw_data()), rows,
          xhat.shape().back());
  TDROP_LAUNCH_CHECK("layer_norm_backward_kernel");
}

}  // namespace

void layer_norm_forward_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps,
                             const Tensor& y, const Tensor& xhat, const Tensor& rstd) {
  if (x.dtype() == DType::F32) forward_typed<float>(x, gamma, beta, eps, y, xhat, rstd);
  else forward_typed<double>(x, gamma, beta, eps, y, xhat, rstd);
}

void layer_norm_backward_cuda(const Tensor& g_xhat, const Tensor& xhat, const Tensor& rstd,
                              const Tensor& gx) {
  if (xhat.dtype() == DType::F32) backward_typed<float>(g_xhat, xhat, rstd, gx);
  else backward_typed<double>(g_xhat, xhat, rstd, gx);
}

}  // namespace tdrop
