// Pieces shared by both CUDA paths: the reusable workspace, the non-finite report, and the
// backward mask multiply.
#include <limits>

#include "core/cuda_check.h"
#include "core/device.h"
#include "kernels/targeted_dropout.h"

namespace tdrop {

namespace {
constexpr int kFlagSlot = 0x7fff;  // the flags live in their own buffer, not a numbered slot

// Index type I: 32-bit where rows * n fits, since a 64-bit division per element costs more
// than the 8 bytes the element moves (a training step runs this once per targeted layer).
template <class I>
__global__ void mask_grad_kernel(const float* __restrict__ g, const uint32_t* __restrict__ mask,
                                 I total, I n, float* __restrict__ out) {
  const I words = static_cast<I>(mask_words_per_row(n));
  for (I i = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<I>(gridDim.x) * blockDim.x) {
    const I r = i / n, c = i - r * n;
    out[i] = (mask[r * words + c / 32] >> (c % 32)) & 1u ? g[i] : 0.0f;
  }
}
}  // namespace

TdCudaWorkspace::TdCudaWorkspace() = default;

TdCudaWorkspace::~TdCudaWorkspace() {
  for (Buf& b : bufs_) device_free(Device::CUDA, b.p, b.bytes);
}

void* TdCudaWorkspace::buffer(int slot, size_t bytes) {
  const size_t i = slot == kFlagSlot ? 0 : static_cast<size_t>(slot) + 1;
  if (bufs_.size() <= i) bufs_.resize(i + 1);
  Buf& b = bufs_[i];
  if (b.bytes < bytes) {
    device_free(Device::CUDA, b.p, b.bytes);
    b.p = device_alloc(Device::CUDA, bytes, "targeted dropout workspace");
    b.bytes = bytes;
  }
  return b.p;
}

TdFlags TdCudaWorkspace::nonfinite_flags(size_t count) {
  const size_t bytes = std::max<size_t>(count, 1) * sizeof(int);
  const bool fresh = bufs_.empty() || bufs_[0].bytes < bytes;  // bufs_[0]: kFlagSlot's buffer
  int* f = static_cast<int*>(buffer(kFlagSlot, bytes));
  // Cleared when the buffer is new (it may hold any mark) and when the marks start over.
  if (fresh || flag_mark_ == std::numeric_limits<int>::max()) {
    TDROP_CUDA_CHECK(cudaMemsetAsync(f, 0, bufs_[0].bytes, cuda_stream()));
    flag_mark_ = 0;
  }
  return {f, ++flag_mark_};
}

void TdNonfiniteCheck::start(const std::vector<TdTask>& tasks, TdCudaWorkspace& ws) {
  finish();
  layers_.clear();
  for (const TdTask& t : tasks) layers_.push_back({t.name, t.rows, t.n});
  mark_ = ws.flag_mark();
  if (tasks.empty() || mark_ == 0) return;  // no launch has used these flags
  flags_.start(Device::CUDA, {{ws.buffer(kFlagSlot, tasks.size() * sizeof(int)),
                               tasks.size() * sizeof(int)}});
}

void TdNonfiniteCheck::finish() {
  if (!flags_.pending()) return;
  flags_.wait();
  const std::vector<int> host = flags_.part<int>(0);
  for (size_t i = 0; i < layers_.size(); ++i)
    TDROP_CHECK(host[i] != mark_, "targeted dropout: layer '", layers_[i].name,
                "' has a non-finite weight (NaN or Inf) in its [", layers_[i].rows, ", ",
                layers_[i].n, "] weight");
}

void td_check_nonfinite(const std::vector<TdTask>& tasks, TdCudaWorkspace& ws) {
  TdNonfiniteCheck check;
  check.start(tasks, ws);
  check.finish();
}

void td_mask_grad_cuda(const float* g, const uint32_t* mask, int64_t rows, int64_t n, float* out) {
  if (rows * n == 0) return;
  const int64_t total = rows * n;
  // The grid-stride index stays below total + grid size, which must fit too.
  if (total + int64_t{65535} * 16 * 256 < (int64_t{1} << 31))
    mask_grad_kernel<uint32_t><<<cuda_blocks(total), 256, 0, cuda_stream()>>>(
        g, mask, static_cast<uint32_t>(total), static_cast<uint32_t>(n), out);
  else
    mask_grad_kernel<int64_t><<<cuda_blocks(total), 256, 0, cuda_stream()>>>(g, mask, total, n, out);
  TDROP_LAUNCH_CHECK("mask_grad_kernel");
}

}  // namespace tdrop
