// Image preparation and augmentation on CHW float images.
//
// Augmentation follows the CIFAR recipe of He et al. 2016: pad by `pad` pixels on each side, take
// a random crop of the original size, and flip horizontally with probability 1/2. The random
// numbers come from Philox keyed by (seed, epoch, sample index) alone, so an augmented batch is
// the same whatever the batch size, thread or device that prepares it.
#pragma once
#include <cstdint>
#include <vector>

#include "data/fashion_mnist.h"

namespace tdrop {

struct AugmentConfig {
  int64_t pad = 4;     // crop offset range: [-pad, pad] in each direction; 0 = no crop
  bool flip = true;    // random horizontal flip
  // Value of the padding pixels, per channel (one value: every channel). Images are augmented
  // after normalisation, so black is -mean/std: black_padding() gives that.
  std::vector<float> fill{0.0f};
};

// Augmentation whose padding is black in images normalised by (mean, std) per channel, as
// torchvision's RandomCrop(padding=4) before Normalize: the border a crop brings in matches the
// black background of Fashion-MNIST and of its 28x28 -> 32x32 canvas.
AugmentConfig black_padding(const std::vector<float>& mean, const std::vector<float>& std);

// The crop offsets and flip chosen for one sample (exposed for tests and for logging).
struct AugmentDraw {
  int64_t dy = 0, dx = 0;  // the crop's top-left corner in the padded image, in [0, 2*pad]
  bool flip = false;
};
AugmentDraw augment_draw(const AugmentConfig& cfg, uint64_t seed, uint64_t epoch,
                         uint64_t sample);

// dst (C x H x W) = the augmented copy of src (C x H x W) for this (seed, epoch, sample).
// src and dst must not overlap.
void augment_image(const float* src, float* dst, int64_t channels, int64_t height, int64_t width,
                   const AugmentConfig& cfg, uint64_t seed, uint64_t epoch, uint64_t sample);

// Pixels p in [0, 255] of a C x H x W image to (p/255 - mean[c]) / std[c]; mean and std hold one
// value per channel, or a single value for all.
void normalize_image(const uint8_t* src, float* dst, int64_t channels, int64_t pixels,
                     const std::vector<float>& mean, const std::vector<float>& std);

// Every image centred in a height x width canvas of zeros (e.g. Fashion-MNIST 28x28 -> 32x32 for
// the CIFAR-style networks). The target must be at least the current size.
ImageDataset pad_images(const ImageDataset& ds, int64_t height, int64_t width);

}  // namespace tdrop
