// Host-to-device copies that never make the host wait for the GPU.
//
// A cudaMemcpyAsync from pageable host memory may first wait for everything queued on the stream
// (CUDA's API synchronization rules), and Tensor::to(Device::CUDA) waits on purpose so that the
// caller can reuse its buffer. Either drains the queue of work a training loop keeps ahead of
// the GPU. Uploader copies the data into pinned memory and queues the device copy from there.
// Its pinned buffers form a ring: a buffer is written again only after the copy queued from it
// has run. A batch takes two (images, labels), so the default ring is 8 batches deep: the copy
// of batch i - 8 ran long ago while the host keeps only a few steps (the trainer's readback lag,
// 2) ahead of the GPU. A shallower ring would make the loader wait for the GPU, unseen by
// host_stream_syncs().
#pragma once
#include <cstddef>
#include <mutex>
#include <vector>

#include "core/tensor.h"

namespace tdrop {

class Uploader {
 public:
  explicit Uploader(int slots = 16);
  ~Uploader();
  Uploader(const Uploader&) = delete;
  Uploader& operator=(const Uploader&) = delete;

  // A new CUDA tensor with the contents of `host` (a CPU tensor), copied behind the work already
  // queued on the stream. Thread-safe.
  Tensor upload(const Tensor& host);

 private:
  struct Slot {
    char* host = nullptr;
    size_t capacity = 0;
    void* event = nullptr;  // cudaEvent_t recorded after the copy out of `host`
    bool in_flight = false;
  };
  std::mutex mu_;
  std::vector<Slot> slots_;
  size_t next_ = 0;
};

}  // namespace tdrop
