#include "data/loader.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/philox.h"

namespace tdrop {

BatchLoader::BatchLoader(const ImageDataset& data, int64_t batch_size, bool shuffle, uint64_t seed,
                         Device device, const std::vector<float>& mean,
                         const std::vector<float>& std, const AugmentConfig* augment)
    : count_(data.count), sample_size_(data.channels * data.height * data.width),
      batch_size_(batch_size), sample_shape_{data.channels, data.height, data.width},
      shuffle_(shuffle), seed_(seed), device_(device), labels_(data.labels) {
  TDROP_CHECK(batch_size > 0, "batch size must be positive, got ", batch_size);
  TDROP_CHECK(count_ > 0, "the dataset is empty");
  TDROP_CHECK(static_cast<int64_t>(data.images.size()) == count_ * sample_size_,
              "dataset holds ", data.images.size(), " pixels, expected ", count_ * sample_size_);
  TDROP_CHECK(static_cast<int64_t>(data.labels.size()) == count_, "dataset holds ",
              data.labels.size(), " labels for ", count_, " images");
  pixels_.resize(data.images.size());
  const int64_t plane = data.height * data.width;
  for (int64_t i = 0; i < count_; ++i)
    normalize_image(data.images.data() + i * sample_size_, pixels_.data() + i * sample_size_,
                    data.channels, plane, mean, std);
  if (augment) {
    augment_on_ = true;
    augment_ = *augment;
  }
  order_.resize(static_cast<size_t>(count_));
  std::iota(order_.begin(), order_.end(), 0);
  if (device_ == Device::CUDA) uploader_ = std::make_unique<Uploader>();
}

int64_t BatchLoader::num_batches() const {
  return count_ / batch_size_ + (count_ % batch_size_ != 0);  // count + batch - 1 could overflow
}

void BatchLoader::start_epoch(uint64_t epoch) {
  epoch_ = epoch;
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
    if (augment_on_)
      augment_image(pixels_.data() + s * sample_size_, px + j * sample_size_, sample_shape_[0],
                    sample_shape_[1], sample_shape_[2], augment_, seed_, epoch_,
                    static_cast<uint64_t>(s));
    else
      std::memcpy(px + j * sample_size_, pixels_.data() + s * sample_size_,
                  sizeof(float) * sample_size_);
    py[j] = labels_[s];
  }
  if (uploader_) return {uploader_->upload(x), uploader_->upload(y)};
  return {x.to(device_), y.to(device_)};
}

}  // namespace tdrop
