// Reads small device buffers back to the host without draining the GPU. start() queues a copy
// into pinned host memory behind the work already queued on the stream and records an event;
// wait() blocks on that event only, so the host can queue further steps in between. For CPU
// buffers the copy happens at once. Used by training to look at a step's loss and predictions
// a step or two later instead of synchronising every step.
#pragma once
#include <cstddef>
#include <cstring>
#include <vector>

#include "core/device.h"
#include "core/tensor.h"

namespace tdrop {

class Readback {
 public:
  Readback() = default;
  ~Readback();
  Readback(const Readback&) = delete;
  Readback& operator=(const Readback&) = delete;
  Readback(Readback&& o) noexcept;
  Readback& operator=(Readback&& o) noexcept;

  // Queues copies of `parts` (pointer, bytes) living on `device`; replaces any earlier contents.
  void start(Device device, const std::vector<std::pair<const void*, size_t>>& parts);
  // The same for whole contiguous tensors (all on one device).
  void start(const std::vector<Tensor>& tensors);
  bool pending() const { return pending_; }
  // Waits for the copies started last; part i as an array of T (its bytes / sizeof(T) items).
  void wait();
  template <class T>
  std::vector<T> part(size_t i) const {
    TDROP_CHECK(!pending_, "Readback::part: the copies are still in flight; call wait() first");
    TDROP_CHECK(i < sizes_.size(), "Readback::part: part ", i, " of ", sizes_.size());
    std::vector<T> out(sizes_[i] / sizeof(T));
    if (!out.empty()) std::memcpy(out.data(), host_ + offsets_[i], out.size() * sizeof(T));
    return out;
  }

 private:
  void release();
  char* host_ = nullptr;  // pinned for CUDA copies, plain for CPU ones
  size_t capacity_ = 0;
  bool pinned_ = false;
  void* event_ = nullptr;  // cudaEvent_t
  bool pending_ = false;
  std::vector<size_t> offsets_, sizes_;
};

}  // namespace tdrop
