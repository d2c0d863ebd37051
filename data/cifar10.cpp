#include "data/cifar10.h"

#include <filesystem>

#include "core/atomic_file.h"
#include "core/error.h"

namespace tdrop {

void read_cifar10_file(const std::string& path, ImageDataset& out) {
  std::error_code ec;
  TDROP_CHECK(std::filesystem::is_regular_file(path, ec), "cifar10: ", path,
              " not found; the CIFAR-10 binary version (cifar-10-batches-bin) is not shipped with "
              "tdrop: pass --data-dir DIR pointing at its files");
  // The size is judged before anything is read: a file far larger than any CIFAR-10 batch is an
  // error, not an attempt to hold it in memory.
  const auto on_disk = std::filesystem::file_size(path, ec);
  TDROP_CHECK(!ec, "cifar10: cannot read ", path, ": ", ec.message());
  TDROP_CHECK(on_disk <= kCifar10MaxFileBytes, "cifar10: ", path, " has ", on_disk,
              " bytes, more than any CIFAR-10 batch file (at most ", kCifar10MaxFileBytes, ")");
  const std::string bytes = read_file(path);
  const int64_t size = static_cast<int64_t>(bytes.size());
  TDROP_CHECK(size > 0 && size % kCifar10RecordBytes == 0, "cifar10: ", path, " has ", size,
              " bytes, not a positive multiple of the ", kCifar10RecordBytes,
              "-byte record (1 label byte + 3x32x32 pixels): truncated or not CIFAR-10 binary");
  TDROP_CHECK(out.count == 0 || (out.channels == 3 && out.height == 32 && out.width == 32),
              "cifar10: cannot append 3x32x32 images from ", path, " to a dataset of ",
              out.channels, "x", out.height, "x", out.width, " images");
  const int64_t records = size / kCifar10RecordBytes;
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  // Every label is checked before `out` changes: a bad file leaves the dataset as it was.
  for (int64_t r = 0; r < records; ++r) {
    const uint8_t label = data[r * kCifar10RecordBytes];
    TDROP_CHECK(label < 10, "cifar10: ", path, ": record ", r, " has label ", int{label},
                ", outside [0, 9]");
  }
  out.channels = 3, out.height = 32, out.width = 32, out.num_classes = 10;
  out.images.reserve(out.images.size() + static_cast<size_t>(records * (kCifar10RecordBytes - 1)));
  out.labels.reserve(out.labels.size() + static_cast<size_t>(records));
  for (int64_t r = 0; r < records; ++r) {
    const uint8_t* rec = data + r * kCifar10RecordBytes;
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
