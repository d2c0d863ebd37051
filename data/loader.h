// Batches from an in-memory image dataset: pixels normalised once to float, a Philox shuffle per
// epoch (so the order depends only on (seed, epoch)), and each batch gathered into a tensor on
// the training device. batch() may run on another thread than the training loop.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"
#include "core/upload.h"
#include "data/augment.h"
#include "data/fashion_mnist.h"

namespace tdrop {

struct Batch {
  Tensor images;  // F32 [B, C, H, W] on the loader's device
  Tensor labels;  // I64 [B]
};

class BatchLoader {
 public:
  // mean/std normalise pixels per channel (or one value for all): x = (p/255 - mean) / std.
  // With `augment`, each training image is cropped/flipped per (seed, epoch, image).
  BatchLoader(const ImageDataset& data, int64_t batch_size, bool shuffle, uint64_t seed,
              Device device, const std::vector<float>& mean, const std::vector<float>& std,
              const AugmentConfig* augment = nullptr);
  int64_t num_batches() const;
  int64_t size() const { return count_; }
  // Starts epoch `epoch` (0-based): reshuffles when shuffling is on.
  void start_epoch(uint64_t epoch);
  // Batch i of the current epoch (the last one may be smaller).
  Batch batch(int64_t i) const;

 private:
  int64_t count_, sample_size_, batch_size_;
  Shape sample_shape_;
  bool shuffle_, augment_on_ = false;
  AugmentConfig augment_;
  uint64_t seed_, epoch_ = 0;
  Device device_;
  std::vector<float> pixels_;
  std::vector<int64_t> labels_, order_;
  // CUDA batches go up through pinned buffers, so gathering the next batch (on another thread,
  // while the current one trains) never makes the host wait for the GPU.
  std::unique_ptr<Uploader> uploader_;
};


}  // namespace tdrop
