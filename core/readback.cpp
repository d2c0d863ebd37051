#include "core/readback.h"

#include <cuda_runtime.h>

#include <cstdlib>
#include <utility>

#include "core/cuda_check.h"
#include "core/error.h"

namespace tdrop {

Readback::~Readback() { release(); }

Readback::Readback(Readback&& o) noexcept { *this = std::move(o); }

Readback& Readback::operator=(Readback&& o) noexcept {
  if (this == &o) return *this;
  release();
  host_ = std::exchange(o.host_, nullptr);
  capacity_ = std::exchange(o.capacity_, 0);
  pinned_ = std::exchange(o.pinned_, false);
  event_ = std::exchange(o.event_, nullptr);
  pending_ = std::exchange(o.pending_, false);
  offsets_ = std::move(o.offsets_);
  sizes_ = std::move(o.sizes_);
  return *this;
}

void Readback::release() {
  // A copy still queued into the buffer (a readback abandoned by an exception) must land before
  // the buffer goes: cudaFreeHost is not promised to wait for it. Errors are ignored here, as
  // this runs in destructors during unwinding.
  if (pending_ && event_) cudaEventSynchronize(static_cast<cudaEvent_t>(event_));
  pending_ = false;
  if (event_) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
  if (host_) {
    if (pinned_) cudaFreeHost(host_);
    else std::free(host_);
  }
  host_ = nullptr;
  event_ = nullptr;
  capacity_ = 0;
}

void Readback::start(Device device, const std::vector<std::pair<const void*, size_t>>& parts) {
  TDROP_CHECK(!pending_, "Readback::start: the previous copy was never waited for");
  offsets_.clear();
  sizes_.clear();
  size_t total = 0;
  for (const auto& [p, bytes] : parts) {
    offsets_.push_back(total);
    sizes_.push_back(bytes);
    total += (bytes + 15) / 16 * 16;
  }
  const bool pinned = device == Device::CUDA;
  if (total > capacity_ || pinned != pinned_) {
    release();
    const size_t cap = std::max<size_t>(total, 64);
    if (pinned) {
      void* h = nullptr;
      TDROP_CUDA_CHECK(cudaMallocHost(&h, cap));
      host_ = static_cast<char*>(h);
    } else {
      host_ = static_cast<char*>(std::malloc(cap));
      TDROP_CHECK(host_ != nullptr, "out of host memory in Readback: asked for ", cap, " bytes");
    }
    capacity_ = cap;
    pinned_ = pinned;
  }
  if (!pinned) {
    for (size_t i = 0; i < parts.size(); ++i)
      if (sizes_[i]) std::memcpy(host_ + offsets_[i], parts[i].first, sizes_[i]);
    return;  // nothing to wait for
  }
  for (size_t i = 0; i < parts.size(); ++i)
    if (sizes_[i])
      TDROP_CUDA_CHECK(cudaMemcpyAsync(host_ + offsets_[i], parts[i].first, sizes_[i],
                                       cudaMemcpyDeviceToHost, cuda_stream()));
  if (!event_) {
    cudaEvent_t e;
    TDROP_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    event_ = e;
  }
  TDROP_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), cuda_stream()));
  pending_ = true;
}

void Readback::start(const std::vector<Tensor>& tensors) {
  std::vector<std::pair<const void*, size_t>> parts;
  Device d = Device::CPU;
  for (const Tensor& t : tensors) {
    TDROP_CHECK(t.is_contiguous(), "Readback: tensor ", shape_str(t.shape()), " is not contiguous");
    TDROP_CHECK(parts.empty() || t.device() == d, "Readback: tensors on different devices");
    d = t.device();
    parts.push_back({t.raw_data(), static_cast<size_t>(t.numel()) * dtype_size(t.dtype())});
  }
  start(d, parts);
}

void Readback::wait() {
  if (!pending_) return;
  pending_ = false;
  TDROP_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
}

}  // namespace tdrop
