#include "core/upload.h"

#include <cuda_runtime.h>

#include <cstring>

#include "core/cuda_check.h"
#include "core/error.h"

namespace tdrop {

Uploader::Uploader(int slots) : slots_(static_cast<size_t>(slots)) {
  TDROP_CHECK(slots > 0, "Uploader: needs at least one slot, got ", slots);
}

Uploader::~Uploader() {
  for (Slot& s : slots_) {
    // Pinned memory may only be freed once the copy out of it has run.
    if (s.in_flight) cudaEventSynchronize(static_cast<cudaEvent_t>(s.event));
    if (s.event) cudaEventDestroy(static_cast<cudaEvent_t>(s.event));
    if (s.host) cudaFreeHost(s.host);
  }
}

Tensor Uploader::upload(const Tensor& host) {
  TDROP_CHECK(host.device() == Device::CPU, "Uploader: expects a CPU tensor, got ",
              host.describe());
  const Tensor src = host.contiguous();
  const size_t bytes = static_cast<size_t>(src.numel()) * dtype_size(src.dtype());
  Tensor out = Tensor::empty(src.shape(), src.dtype(), Device::CUDA);
  if (bytes == 0) return out;
  std::lock_guard<std::mutex> lock(mu_);
  Slot& s = slots_[next_++ % slots_.size()];
  if (s.in_flight) TDROP_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(s.event)));
  s.in_flight = false;
  if (bytes > s.capacity) {
    if (s.host) TDROP_CUDA_CHECK(cudaFreeHost(s.host));
    s.host = nullptr;
    s.capacity = 0;
    void* p = nullptr;
    TDROP_CUDA_CHECK(cudaMallocHost(&p, bytes));
    s.host = static_cast<char*>(p);
    s.capacity = bytes;
  }
  if (!s.event) {
    cudaEvent_t e;
    TDROP_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    s.event = e;
  }
  std::memcpy(s.host, src.raw_data(), bytes);
  TDROP_CUDA_CHECK(cudaMemcpyAsync(out.raw_data(), s.host, bytes, cudaMemcpyHostToDevice,
                                   cuda_stream()));
  TDROP_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(s.event), cuda_stream()));
  s.in_flight = true;
  return out;
}

}  // namespace tdrop
