#include "data/loader.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/philox.h"

namespace tdrop {

BatchLoader::BatchLoader(const ImageDataset& data, int64_t batch_size, bool shuffle, uint64_t seed,
                         Device device, float mean, float std)
    : count_(data.count), sample_size_(data.channels * data.height * data.width),
      batch_size_(batch_size), sample_shape_{data.channels, data.height, data.width},
      shuffle_(shuffle), seed_(seed), device_(device), labels_(data.labels) {
  TDROP_CHECK(batch_size > 0, "batch size must be positive, got ", batch_size);
  TDROP_CHECK(count_ > 0, "the dataset is empty");
  TDROP_CHECK(std > 0.0f, "normalisation std must be positive");
  pixels_.resize(data.images.size());
  const float scale = 1.0f / (255.0f * std), shift = mean / std;
  for (size_t i = 0; i < pixels_.size(); ++i) pixels_[i] = data.images[i] * scale - shift;
  order_.resize(static_cast<size_t>(count_));
  std::iota(order_.begin(), order_.end(), 0);
}

int64_t BatchLoader::num_batches() const { return (count_ + batch_size_ - 1) / batch_size_; }

void BatchLoader::start_epoch(uint64_t epoch) {
  std::iota(order_.begin(), order_.end(), 0);
  if (!shuffle_) return;
  PhiloxHost rng(seed_, kStreamShuffle + epoch);
  for (int64_t i = count_ - 1; i > 0; --i)  // Fisher-Yates
    std::swap(order_[i], order_[rng.next_below(static_cast<uint64_t>(i) + 1)]);
}

Batch BatchLoader::batch(int64_t i) const {
  TDROP_CHECK(i >= 0 && i < num_batches(), "batch ", i, " out of range [0, ", num_batches(), ")");
  const int64_t begin = i * batch_size_, n = std::min(batch_size_, count_ - begin);
  Shape shape{n};
  shape.insert(shape.end(), sample_shape_.begin(), sample_shape_.end());
  Tensor x = Tensor::empty(shape, DType::F32, Device::CPU);
  Tensor y = Tensor::empty({n}, DType::I64, Device::CPU);
  float* px = x.data<float>();
  int64_t* py = y.data<int64_t>();
  for (int64_t j = 0; j < n; ++j) {
    const int64_t s = order_[begin + j];
    std::memcpy(px + j * sample_size_, pixels_.data() + s * sample_size_,
                sizeof(float) * sample_size_);
    py[j] = labels_[s];
  }
  return {x.to(device_), y.to(device_)};
}

}  // namespace tdrop
