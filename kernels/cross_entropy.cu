// CUDA softmax cross-entropy: the same stable formula as cross_entropy.cpp, one warp per row.
// Labels are checked on the device; a bad one is reported after the kernel as a tdrop::Error
// with the CPU's message, never as an out-of-bounds read.
#include <cstdint>

#include "core/cuda_check.h"
#include "kernels/cross_entropy.h"
#include "kernels/warp_row_math.cuh"

namespace tdrop {
namespace {

using namespace warp_row;
constexpr int kThreads = 256;

// One warp per row of logits [n, c]: lanes stride over the columns for the max, then write
// exp(x - max) into probs while summing, then rescale their own entries by 1/sum (no barrier
// needed: each lane rereads only what it wrote). A warp shares its row, so the full-mask
// shuffles always see all 32 lanes. A row whose label is outside [0, c) gets zeros, and the
// smallest such row is recorded in *bad_row.
template <class T>
__global__ void cross_entropy_forward_kernel(const T* __restrict__ x, const int64_t* __restrict__ y,
                                             int64_t n, int64_t c, T* __restrict__ loss,
                                             T* __restrict__ probs,
                                             unsigned long long* __restrict__ bad_row) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / kWarp;
  const int64_t warps = (int64_t)gridDim.x * blockDim.x / kWarp;
  for (int64_t r = warp; r < n; r += warps) {
    const int64_t label = y[r];
    if (label < 0 || label >= c) {  // uniform across the warp: every lane read the same label
      // The row still gets defined values (probabilities and loss 0, so a zero gradient): the
      // verdict may be read steps later, and those steps must not train on stale memory.
      for (int64_t j = lane; j < c; j += kWarp) probs[r * c + j] = T(0);
      if (lane == 0) {
        loss[r] = T(0);
        atomicMin(bad_row, static_cast<unsigned long long>(r));
      }
      continue;
    }
    const T* row = x + r * c;
    const SoftmaxRow<T> s = softmax_row(row, probs + r * c, c, lane);
    if (lane == 0) loss[r] = (s.max - row[label]) + log_of(s.sum);  // as the CPU: see there
  }
}

// grad[r, j] = (probs[r, j] - (j == label[r])) * scale, one element per thread, with
// scale = g_loss / n rounded to T as the CPU does (the division in double, then the cast).
template <class T>
__global__ void cross_entropy_backward_kernel(const T* __restrict__ p, const int64_t* __restrict__ y,
                                              int64_t n, int64_t c, int64_t total,
                                              const T* __restrict__ g_loss, T* __restrict__ g) {
  const T scale = static_cast<T>(static_cast<double>(*g_loss) / static_cast<double>(n));
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / c, j = i - r * c;
    g[i] = (p[i] - (j == y[r] ? T(1) : T(0))) * scale;
  }
}

template <class T>
void forward_typed(const Tensor& logits, const Tensor& labels, const Tensor& losses,
                   const Tensor& probs, Tensor* bad_row) {
  const int64_t n = logits.size(0), c = logits.size(1);
  // Smallest bad row; all ones (-1 as int64) while every label is valid.
  Tensor bad = Tensor::empty({1}, DType::I64, Device::CUDA);
  TDROP_CUDA_CHECK(cudaMemsetAsync(bad.raw_data(), 0xFF, sizeof(int64_t), cuda_stream()));
  if (n == 0) {
    if (bad_row != nullptr) *bad_row = bad;
    return;
  }
  const int64_t warps_per_block = kThreads / kWarp;
  cross_entropy_forward_kernel<T>
      <<<cuda_blocks(n, static_cast<int>(warps_per_block)), kThreads, 0, cuda_stream()>>>(
          static_cast<const T*>(logits.raw_data()), labels.data<int64_t>(), n, c,
          static_cast<T*>(losses.raw_data()), static_cast<T*>(probs.raw_data()),
          reinterpret_cast<unsigned long long*>(bad.raw_data()));
  TDROP_LAUNCH_CHECK("cross_entropy_forward_kernel");
  if (bad_row != nullptr) {
    *bad_row = bad;
    return;
  }
  const int64_t row = bad.to_vector<int64_t>()[0];
  if (row >= 0) {
    const int64_t label = labels.narrow(0, row, 1).to_vector<int64_t>()[0];
    fail(cross_entropy_label_error(label, row, logits.shape()));
  }
}

template <class T>
void backward_typed(const Tensor& probs, const Tensor& labels, const Tensor& g_loss,
                    const Tensor& g) {
  const int64_t n = probs.size(0), c = probs.size(1), total = probs.numel();
  if (total == 0) return;
  cross_entropy_backward_kernel<T><<<cuda_blocks(total), kThreads, 0, cuda_stream()>>>(
      static_cast<const T*>(probs.raw_data()), labels.data<int64_t>(), n, c, total,
      static_cast<const T*>(g_loss.raw_data()), static_cast<T*>(g.raw_data()));
  TDROP_LAUNCH_CHECK("cross_entropy_backward_kernel");
}

}  // namespace

void cross_entropy_forward_cuda(const Tensor& logits, const Tensor& labels, const Tensor& losses,
                                const Tensor& probs, Tensor* bad_row) {
  if (logits.dtype() == DType::F32) forward_typed<float>(logits, labels, losses, probs, bad_row);
  else forward_typed<double>(logits, labels, losses, probs, bad_row);
}

void cross_entropy_backward_cuda(const Tensor& probs, const Tensor& labels, const Tensor& g_loss,
                                 const Tensor& grad_logits) {
  TDROP_CHECK(g_loss.numel() == 1 && g_loss.dtype() == probs.dtype() && g_loss.is_contiguous(),
              "cross_entropy backward: the loss gradient must be one contiguous ",
              dtype_name(probs.dtype()), " element, got ", g_loss.describe());
  if (probs.dtype() == DType::F32) backward_typed<float>(probs, labels, g_loss, grad_logits);
  else backward_typed<double>(probs, labels, g_loss, grad_logits);
}

}  // namespace tdrop
