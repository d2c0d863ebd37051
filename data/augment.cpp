#include "data/augment.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/philox.h"

namespace tdrop {

AugmentDraw augment_draw(const AugmentConfig& cfg, uint64_t seed, uint64_t epoch,
                         uint64_t sample) {
  TDROP_CHECK(cfg.pad >= 0, "augment: pad must be non-negative, got ", cfg.pad);
  // One Philox block (four numbers) per sample: position 4 * sample of the epoch's stream.
  PhiloxHost rng(seed, kStreamAugment + epoch);
  rng.set_position(4 * sample);
  AugmentDraw d;
  d.dy = static_cast<int64_t>(rng.next_below(static_cast<uint64_t>(2 * cfg.pad + 1)));
  d.dx = static_cast<int64_t>(rng.next_below(static_cast<uint64_t>(2 * cfg.pad + 1)));
  d.flip = cfg.flip && (rng.next_u32() >> 31) != 0;
  return d;
}

void augment_image(const float* src, float* dst, int64_t channels, int64_t height, int64_t width,
                   const AugmentConfig& cfg, uint64_t seed, uint64_t epoch, uint64_t sample) {
  const AugmentDraw d = augment_draw(cfg, seed, epoch, sample);
  // Output pixel (y, x) reads padded pixel (y + dy, x' + dx) with x' the flipped column, i.e.
  // source pixel (y + dy - pad, x' + dx - pad), or `fill` outside the image.
  const int64_t oy = d.dy - cfg.pad, ox = d.dx - cfg.pad;
  const size_t fills = cfg.fill.size();
  TDROP_CHECK(fills == 1 || fills == static_cast<size_t>(channels), "augment: need 1 or ",
              channels, " fill values, got ", fills);
  for (int64_t c = 0; c < channels; ++c) {
    const float* in = src + c * height * width;
    float* out = dst + c * height * width;
    const float fill = cfg.fill[fills == 1 ? 0 : static_cast<size_t>(c)];
    for (int64_t y = 0; y < height; ++y) {
      const int64_t sy = y + oy;
      for (int64_t x = 0; x < width; ++x) {
        const int64_t sx = (d.flip ? width - 1 - x : x) + ox;
        const bool inside = sy >= 0 && sy < height && sx >= 0 && sx < width;
        out[y * width + x] = inside ? in[sy * width + sx] : fill;
      }
    }
  }
}

AugmentConfig black_padding(const std::vector<float>& mean, const std::vector<float>& std) {
  TDROP_CHECK(!mean.empty() && mean.size() == std.size(), "augment: ", mean.size(), " means and ",
              std.size(), " standard deviations");
  AugmentConfig cfg;
  cfg.fill.resize(mean.size());
  for (size_t c = 0; c < mean.size(); ++c) {
    TDROP_CHECK(std[c] > 0.0f, "augment: std of channel ", c, " must be positive, got ", std[c]);
    cfg.fill[c] = -mean[c] / std[c];
  }
  return cfg;
}

void normalize_image(const uint8_t* src, float* dst, int64_t channels, int64_t pixels,
                     const std::vector<float>& mean, const std::vector<float>& std) {
  const auto n = static_cast<size_t>(channels);
  TDROP_CHECK((mean.size() == 1 || mean.size() == n) && (std.size() == 1 || std.size() == n),
              "normalize_image: need 1 or ", channels, " mean/std values, got ", mean.size(),
              " and ", std.size());
  for (int64_t c = 0; c < channels; ++c) {
    const float m = mean[mean.size() == 1 ? 0 : c], s = std[std.size() == 1 ? 0 : c];
    TDROP_CHECK(s > 0.0f, "normalize_image: std of channel ", c, " must be positive, got ", s);
    const float scale = 1.0f / (255.0f * s), shift = m / s;
    for (int64_t i = 0; i < pixels; ++i)
      dst[c * pixels + i] = static_cast<float>(src[c * pixels + i]) * scale - shift;
  }
}

ImageDataset pad_images(const ImageDataset& ds, int64_t height, int64_t width) {
  TDROP_CHECK(height >= ds.height && width >= ds.width, "pad_images: cannot pad ", ds.height, "x",
              ds.width, " images to a smaller ", height, "x", width);
  ImageDataset out = ds;
  out.height = height;
  out.width = width;
  out.images.assign(static_cast<size_t>(ds.count * ds.channels * height * width), 0);
  const int64_t top = (height - ds.height) / 2, left = (width - ds.width) / 2;
  for (int64_t i = 0; i < ds.count * ds.channels; ++i) {
    const uint8_t* in = ds.images.data() + i * ds.height * ds.width;
    uint8_t* o = out.images.data() + i * height * width;
    for (int64_t y = 0; y < ds.height; ++y)
      std::memcpy(o + (y + top) * width + left, in + y * ds.width, static_cast<size_t>(ds.width));
  }
  return out;
}

}  // namespace tdrop
