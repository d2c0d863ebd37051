// Image data on CPU: the CIFAR-10 binary reader on small files written here (good, truncated,
// empty, bad label, missing), padding Fashion-MNIST to 32x32, per-channel normalisation, and
// augmentation (crop/flip geometry, reproducibility per (seed, epoch, sample)).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "tests/temp_dir.h"
#include "tests/expect_error.h"
#include "core/error.h"
#include "data/augment.h"
#include "data/cifar10.h"
#include "data/datasets.h"
#include "data/loader.h"

namespace fs = std::filesystem;

namespace tdrop {
namespace {

using ::tdrop::testing::error_message;
using ::tdrop::testing::expect_error;
using ::tdrop::testing::TempDir;

// A record whose pixels encode (first label, record index, channel, position) so that any
// misplaced byte shows up.
std::vector<uint8_t> record(uint8_t label, int64_t index) {
  std::vector<uint8_t> r(static_cast<size_t>(kCifar10RecordBytes));
  r[0] = label;
  for (int64_t i = 0; i < 3072; ++i) r[1 + i] = static_cast<uint8_t>((index * 31 + i * 7 + label) & 0xff);
  return r;
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> records(const std::vector<uint8_t>& labels, int64_t first_index) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i < labels.size(); ++i) {
    const auto r = record(labels[i], first_index + static_cast<int64_t>(i));
    out.insert(out.end(), r.begin(), r.end());
  }
  return out;
}

TEST(Cifar10, ReadsRecordsAsChwImagesInFileOrder) {
  TempDir dir;
  const std::vector<uint8_t> labels = {3, 0, 9};
  write_file(dir.file("test_batch.bin"), records(labels, 0));
  const ImageDataset ds = load_cifar10(dir.path().string(), "test");
  ASSERT_EQ(ds.count, 3);
  EXPECT_EQ(ds.channels, 3);
  EXPECT_EQ(ds.height, 32);
  EXPECT_EQ(ds.width, 32);
  EXPECT_EQ(ds.num_classes, 10);
  EXPECT_EQ(ds.labels, (std::vector<int64_t>{3, 0, 9}));
  ASSERT_EQ(ds.images.size(), 3u * 3072u);
  for (int64_t r = 0; r < 3; ++r) {
    const auto want = record(labels[r], r);
    for (int64_t i = 0; i < 3072; ++i) ASSERT_EQ(ds.images[r * 3072 + i], want[1 + i]) << r << " " << i;
  }
}

TEST(Cifar10, TrainSplitConcatenatesTheFiveBatches) {
  TempDir dir;
  int64_t index = 0;
  std::vector<int64_t> all_labels;
  for (int b = 1; b <= 5; ++b) {
    std::vector<uint8_t> labels(static_cast<size_t>(b), static_cast<uint8_t>(b));
    write_file(dir.file("data_batch_" + std::to_string(b) + ".bin"), records(labels, index));
    index += b;
    all_labels.insert(all_labels.end(), labels.begin(), labels.end());
  }
  const ImageDataset ds = load_cifar10(dir.path().string(), "train");
  EXPECT_EQ(ds.count, 15);
  EXPECT_EQ(ds.labels, all_labels);
  const auto last = record(5, 14);
  EXPECT_TRUE(std::equal(last.begin() + 1, last.end(), ds.images.end() - 3072));
}

TEST(Cifar10, ErrorsNameTheFileAndTheProblem) {
  TempDir dir;
  auto bytes = records({1, 2}, 0);
  bytes.pop_back();
  write_file(dir.file("truncated.bin"), bytes);
  write_file(dir.file("empty.bin"), {});
  write_file(dir.file("bad_label.bin"), records({4, 10, 2}, 0));

  ImageDataset ds;
  std::string m = error_message([&] { read_cifar10_file(dir.file("truncated.bin"), ds); });
  EXPECT_NE(m.find("truncated.bin"), std::string::npos) << m;
  EXPECT_NE(m.find("6145 bytes"), std::string::npos) << m;
  EXPECT_NE(m.find("3073"), std::string::npos) << m;
  m = error_message([&] { read_cifar10_file(dir.file("empty.bin"), ds); });
  EXPECT_NE(m.find("empty.bin"), std::string::npos) << m;
  m = error_message([&] { read_cifar10_file(dir.file("bad_label.bin"), ds); });
  EXPECT_NE(m.find("bad_label.bin"), std::string::npos) << m;
  EXPECT_NE(m.find("record 1 has label 10"), std::string::npos) << m;
  m = error_message([&] { load_cifar10(dir.path().string(), "test"); });
  EXPECT_NE(m.find("test_batch.bin"), std::string::npos) << m;
  EXPECT_NE(m.find("not found"), std::string::npos) << m;
  m = error_message([&] { load_cifar10(dir.path().string(), "valid"); });
  EXPECT_NE(m.find("split"), std::string::npos) << m;
  // A file larger than any batch file is refused by its size, before it is read (sparse here:
  // no disk is used).
  const std::string huge = dir.file("huge.bin");
  write_file(huge, {});
  fs::resize_file(huge, kCifar10MaxFileBytes / kCifar10RecordBytes * kCifar10RecordBytes +
                            kCifar10RecordBytes);
  expect_error([&] { read_cifar10_file(huge, ds); }, {"huge.bin", "more than any CIFAR-10"});
  EXPECT_EQ(ds.count, 0);
  // CIFAR-10 is not shipped: without a folder the error says to pass one, rather than looking
  // for the batch files wherever the program runs.
  expect_error([] { load_dataset("cifar10", "", "train", 0); },
               {"cifar10: pass --data-dir DIR", "data_batch_1.bin"});
}

// A bad file appended after a good one leaves the dataset as the good one made it.
TEST(Cifar10, AFailedAppendLeavesTheDatasetAsItWas) {
  TempDir dir;
  write_file(dir.file("good.bin"), records({1, 2}, 0));
  write_file(dir.file("bad.bin"), records({3, 4, 11}, 2));
  ImageDataset ds;
  read_cifar10_file(dir.file("good.bin"), ds);
  expect_error([&] { read_cifar10_file(dir.file("bad.bin"), ds); },
               {"bad.bin", "record 2 has label 11"});
  EXPECT_EQ(ds.count, 2);
  EXPECT_EQ(ds.labels, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(ds.images.size(), 2u * 3072u);
}

TEST(BatchLoaderInput, ABatchLargerThanTheDatasetIsOneBatch) {
  ImageDataset ds;
  ds.count = 3, ds.channels = 1, ds.height = 1, ds.width = 2, ds.num_classes = 10;
  ds.images.assign(6, 0);
  ds.labels = {1, 2, 3};
  for (int64_t batch : {int64_t{3}, int64_t{4}, std::numeric_limits<int64_t>::max()})
    EXPECT_EQ(BatchLoader(ds, batch, false, 1, Device::CPU, {0.0f}, {1.0f}).num_batches(), 1)
        << "batch " << batch;
  EXPECT_EQ(BatchLoader(ds, 2, false, 1, Device::CPU, {0.0f}, {1.0f}).num_batches(), 2);
}

TEST(BatchLoaderInput, LabelsThatDoNotMatchTheImagesAreAnError) {
  ImageDataset ds;
  ds.count = 4, ds.channels = 1, ds.height = 2, ds.width = 2, ds.num_classes = 10;
  ds.images.assign(16, 0);
  ds.labels = {7};
  expect_error([&] { BatchLoader(ds, 2, false, 1, Device::CPU, {0.0f}, {1.0f}); },
               {"1 labels", "4 images"});
}

TEST(PadImages, CentresImagesOnAZeroCanvas) {
  ImageDataset ds;
  ds.count = 2, ds.channels = 1, ds.height = 28, ds.width = 28;
  ds.images.resize(2 * 28 * 28);
  std::iota(ds.images.begin(), ds.images.end(), uint8_t{1});
  ds.labels = {4, 7};
  const ImageDataset p = pad_images(ds, 32, 32);
  EXPECT_EQ(p.height, 32);
  EXPECT_EQ(p.width, 32);
  EXPECT_EQ(p.labels, ds.labels);
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t y = 0; y < 32; ++y)
      for (int64_t x = 0; x < 32; ++x) {
        const bool inside = y >= 2 && y < 30 && x >= 2 && x < 30;
        const uint8_t want = inside ? ds.images[(n * 28 + y - 2) * 28 + x - 2] : 0;
        ASSERT_EQ(p.images[(n * 32 + y) * 32 + x], want) << n << " " << y << " " << x;
      }
  expect_error([&] { pad_images(ds, 27, 32); },
               {"pad_images", "cannot pad 28x28 images to a smaller 27x32"});
}

TEST(Normalize, PerChannelMeanAndStd) {
  const std::vector<uint8_t> px = {0, 255, 51, 102};  // two channels of two pixels
  std::vector<float> out(4);
  normalize_image(px.data(), out.data(), 2, 2, {0.5f, 0.2f}, {0.25f, 0.4f});
  EXPECT_NEAR(out[0], (0.0f - 0.5f) / 0.25f, 1e-6f);
  EXPECT_NEAR(out[1], (1.0f - 0.5f) / 0.25f, 1e-6f);
  EXPECT_NEAR(out[2], (0.2f - 0.2f) / 0.4f, 1e-6f);
  EXPECT_NEAR(out[3], (0.4f - 0.2f) / 0.4f, 1e-6f);
  expect_error([&] { normalize_image(px.data(), out.data(), 2, 2, {0.5f, 0.2f, 0.1f}, {1.0f}); },
               {"normalize_image", "need 1 or 2 mean/std values, got 3 and 1"});
  expect_error([&] { normalize_image(px.data(), out.data(), 2, 2, {0.5f}, {0.25f, 0.0f}); },
               {"normalize_image", "std of channel 1 must be positive, got 0"});
}

std::vector<float> ramp_image(int64_t c, int64_t h, int64_t w) {
  std::vector<float> v(static_cast<size_t>(c * h * w));
  std::iota(v.begin(), v.end(), 1.0f);
  return v;
}

TEST(Augment, CropAndFlipFollowTheDraw) {
  const int64_t C = 2, H = 5, W = 6;
  const std::vector<float> src = ramp_image(C, H, W);
  std::vector<float> dst(src.size());
  const AugmentConfig cfg{.pad = 2, .flip = true, .fill = {-7.0f, -9.0f}};
  int flips = 0;
  int dys[5] = {}, dxs[5] = {};  // how often each offset 0..2 * pad was drawn
  for (uint64_t sample = 0; sample < 64; ++sample) {
    const AugmentDraw d = augment_draw(cfg, 99, 3, sample);
    ASSERT_GE(d.dy, 0);
    ASSERT_LE(d.dy, 4);
    ASSERT_GE(d.dx, 0);
    ASSERT_LE(d.dx, 4);
    flips += d.flip;
    ++dys[d.dy];
    ++dxs[d.dx];
    augment_image(src.data(), dst.data(), C, H, W, cfg, 99, 3, sample);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
          // Crop of the padded image at (dy, dx), then mirror the columns when flipping.
          const int64_t cx = d.flip ? W - 1 - x : x;
          const int64_t sy = y + d.dy - 2, sx = cx + d.dx - 2;
          const bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
          const float want = inside ? src[(c * H + sy) * W + sx] : c == 0 ? -7.0f : -9.0f;
          ASSERT_EQ(dst[(c * H + y) * W + x], want) << sample << " " << c << " " << y << " " << x;
        }
  }
  EXPECT_GT(flips, 16);  // about half of 64
  EXPECT_LT(flips, 48);
  for (int o = 0; o < 5; ++o) {  // every crop offset, the outermost ones included, is drawn
    EXPECT_GT(dys[o], 0) << "dy " << o;
    EXPECT_GT(dxs[o], 0) << "dx " << o;
  }
}

// The trainer's padding is black after normalisation: a raw 0 pixel normalised is exactly the
// fill, so a crop's border matches the Fashion-MNIST background and its 32x32 canvas.
TEST(Augment, TrainingPadsWithNormalisedBlack) {
  const DatasetSpec& spec = find_dataset("fashion-mnist");
  const AugmentConfig cfg = black_padding(spec.mean, spec.std);
  const uint8_t black[1] = {0};
  float normalised = 0;
  normalize_image(black, &normalised, 1, 1, spec.mean, spec.std);
  ASSERT_EQ(cfg.fill.size(), 1u);
  EXPECT_NEAR(cfg.fill[0], normalised, 1e-6f);
  EXPECT_LT(cfg.fill[0], -0.5f);  // not the mid-grey 0 of the normalised scale
  const std::vector<float> rgb = black_padding({0.5f, 0.25f, 0.0f}, {0.5f, 0.25f, 1.0f}).fill;
  EXPECT_EQ(rgb, (std::vector<float>{-1.0f, -1.0f, 0.0f}));
  expect_error([] { black_padding({0.5f}, {0.0f}); }, {"std of channel 0"});
  // A fill per channel must match the image's channels.
  const std::vector<float> src = ramp_image(3, 4, 4);
  std::vector<float> dst(src.size());
  expect_error([&] {
    augment_image(src.data(), dst.data(), 3, 4, 4, {.pad = 1, .fill = {1, 2}}, 1, 2, 3);
  }, {"need 1 or 3 fill values, got 2"});
  // Through the loader: black images stay uniformly black whatever the crop (a fill of 0 gave
  // nearly every one a grey border band).
  ImageDataset dark;
  dark.count = 16;
  dark.height = dark.width = 8;
  dark.images.assign(16 * 8 * 8, 0);
  dark.labels.assign(16, 3);
  BatchLoader loader(dark, 16, true, 5, Device::CPU, spec.mean, spec.std, &cfg);
  loader.start_epoch(1);
  for (float v : loader.batch(0).images.to_vector<float>()) ASSERT_EQ(v, normalised);
}

// Each sample's draw is a Philox block of its own: where samples shared numbers (sample s taking
// numbers s, s + 1 and s + 2 of the stream), one sample's dx was always the next one's dy.
TEST(Augment, AdjacentSamplesDrawIndependently) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const AugmentConfig cfg{.pad = 4, .flip = true};
  constexpr int kSamples = 2000;
  int dx_is_next_dy = 0, dy_is_next_dy = 0;
  AugmentDraw prev = augment_draw(cfg, seed, 7, 0);
  for (uint64_t s = 1; s <= kSamples; ++s) {
    const AugmentDraw d = augment_draw(cfg, seed, 7, s);
    dx_is_next_dy += prev.dx == d.dy;
    dy_is_next_dy += prev.dy == d.dy;
    prev = d;
  }
  // Independent draws of 9 offsets agree 2000 / 9 = 222 times, standard deviation 14.
  EXPECT_LT(dx_is_next_dy, 222 + 6 * 14);
  EXPECT_GT(dx_is_next_dy, 222 - 6 * 14);
  EXPECT_LT(dy_is_next_dy, 222 + 6 * 14);
  EXPECT_GT(dy_is_next_dy, 222 - 6 * 14);
}

// The loader augments each image by the draw of its sample number, wherever the shuffle put it in
// the epoch, so a run's images depend on (seed, epoch, sample) only.
TEST(Augment, TheLoaderAugmentsEachImageByItsSampleNumber) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  ImageDataset d;
  d.count = 40;
  d.height = d.width = 5;
  std::mt19937 rng(static_cast<uint32_t>(seed));
  for (int64_t i = 0; i < d.count; ++i) {
    for (int64_t p = 0; p < 25; ++p) d.images.push_back(static_cast<uint8_t>(rng()));
    d.labels.push_back(static_cast<uint8_t>(i % 10));
  }
  const AugmentConfig cfg{.pad = 2, .flip = true, .fill = {-3.0f}};
  BatchLoader loader(d, 16, true, seed, Device::CPU, {0.0f}, {1.0f}, &cfg);
  loader.start_epoch(2);
  // Random pixels tell the images apart: each batch image must be the augmentation of exactly one
  // sample by that sample's own number.
  std::vector<std::vector<float>> want(static_cast<size_t>(d.count), std::vector<float>(25));
  std::vector<float> plain(25);
  for (int64_t s = 0; s < d.count; ++s) {
    normalize_image(d.images.data() + 25 * s, plain.data(), 1, 25, {0.0f}, {1.0f});
    augment_image(plain.data(), want[s].data(), 1, 5, 5, cfg, seed, 2, static_cast<uint64_t>(s));
  }
  int matched = 0;
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    const std::vector<float> x = loader.batch(b).images.to_vector<float>();
    for (size_t j = 0; j < x.size() / 25; ++j) {
      const std::vector<float> got(x.begin() + 25 * j, x.begin() + 25 * (j + 1));
      const auto hits = std::count(want.begin(), want.end(), got);
      EXPECT_EQ(hits, 1) << "batch " << b << " image " << j;
      matched += hits == 1;
    }
  }
  EXPECT_EQ(matched, d.count);
}

TEST(Augment, NoPadNoFlipIsTheIdentity) {
  const std::vector<float> src = ramp_image(3, 4, 4);
  std::vector<float> dst(src.size());
  augment_image(src.data(), dst.data(), 3, 4, 4, {.pad = 0, .flip = false}, 1, 2, 3);
  EXPECT_EQ(dst, src);
}

TEST(Augment, ReproducibleBySeedEpochAndSampleOnly) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const AugmentConfig cfg;
  const std::vector<float> src = ramp_image(3, 32, 32);
  std::vector<float> a(src.size()), b(src.size());
  int differing_epochs = 0, differing_samples = 0;
  for (uint64_t s = 0; s < 20; ++s) {
    augment_image(src.data(), a.data(), 3, 32, 32, cfg, seed, 4, s);
    augment_image(src.data(), b.data(), 3, 32, 32, cfg, seed, 4, s);
    ASSERT_EQ(a, b) << "sample " << s;  // same key, same image
    augment_image(src.data(), b.data(), 3, 32, 32, cfg, seed, 5, s);
    differing_epochs += a != b;
    augment_image(src.data(), b.data(), 3, 32, 32, cfg, seed, 4, s + 1000);
    differing_samples += a != b;
  }
  // 81 crops x 2 flips: two independent draws coincide with probability 1/162.
  EXPECT_GE(differing_epochs, 15);
  EXPECT_GE(differing_samples, 15);
}

}  // namespace
}  // namespace tdrop
