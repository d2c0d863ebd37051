#include "data/cifar10.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"

namespace tdrop {

void read_cifar10_file(const std::string& path, ImageDataset& out) {
  std::error_code ec;
  TDROP_CHECK(std::filesystem::is_regular_file(path, ec), "cifar10: ", path,
              " not found; the CIFAR-10 binary version (cifar-10-batches-bin) is not shipped with "
              "tdrop: pass --data-dir DIR pointing at its files");
  std::ifstream f(path, std::ios::binary);
  TDROP_CHECK(f.good(), "cifar10: cannot open ", path);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)),
                                   std::istreambuf_iterator<char>());
  TDROP_CHECK(!f.bad(), "cifar10: read error in ", path);
  const int64_t size = static_cast<int64_t>(bytes.size());
  TDROP_CHECK(size > 0 && size % kCifar10RecordBytes == 0, "cifar10: ", path, " has ", size,
              " bytes, not a positive multiple of the ", kCifar10RecordBytes,
              "-byte record (1 label byte + 3x32x32 pixels): truncated or not CIFAR-10 binary");
  TDROP_CHECK(out.count == 0 || (out.channels == 3 && out.height == 32 && out.width == 32),
              "cifar10: cannot append 3x32x32 images from ", path, " to a dataset of ",
              out.channels, "x", out.height, "x", out.width, " images");
  const int64_t records = size / kCifar10RecordBytes, pixels = kCifar10RecordBytes - 1;
  out.channels = 3, out.height = 32, out.width = 32, out.num_classes = 10;
  out.images.reserve(out.images.size() + static_cast<size_t>(records * pixels));
  out.labels.reserve(out.labels.size() + static_cast<size_t>(records));
  for (int64_t r = 0; r < records; ++r) {
    const uint8_t* rec = bytes.data() + r * kCifar10RecordBytes;
    TDROP_CHECK(rec[0] < 10, "cifar10: ", path, ": record ", r, " has label ", int{rec[0]},
                ", outside [0, 9]");
    out.labels.push_back(rec[0]);
    out.images.insert(out.images.end(), rec + 1, rec + kCifar10RecordBytes);
  }
  out.count += records;
}

ImageDataset load_cifar10(const std::string& dir, const std::string& split) {
  TDROP_CHECK(split == "train" || split == "test",
              "cifar10: split must be \"train\" or \"test\", got \"", split, "\"");
  std::vector<std::string> names;
  if (split == "train")
    for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
  else
    names.push_back("test_batch.bin");
  ImageDataset ds;
  ds.channels = 3, ds.height = 32, ds.width = 32;
  for (const std::string& n : names)
    read_cifar10_file((std::filesystem::path(dir) / n).string(), ds);
  return ds;
}

}  // namespace tdrop
