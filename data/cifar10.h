// CIFAR-10, binary version (Krizhevsky 2009): 32x32 colour images in 10 classes. Each file is a
// sequence of 3073-byte records: one label byte, then 1024 red, 1024 green and 1024 blue pixel
// bytes (row-major planes), which is exactly the NCHW layout of ImageDataset.
#pragma once
#include <string>

#include "data/fashion_mnist.h"

namespace tdrop {

inline constexpr int64_t kCifar10RecordBytes = 1 + 3 * 32 * 32;
// A batch file holds 10000 records (30.7 MB); larger files are refused before they are read.
inline constexpr uint64_t kCifar10MaxFileBytes = uint64_t{1} << 31;

// split "train" reads data_batch_1.bin ... data_batch_5.bin (50000 images), "test" reads
// test_batch.bin (10000) from dir. Errors name the file: missing, empty, not a whole number of
// records, or a label outside [0, 9].
ImageDataset load_cifar10(const std::string& dir, const std::string& split);

// Appends the records of one CIFAR-10 binary file to `out` (which must be empty or hold 3x32x32
// images already); on an error `out` is left as it was.
void read_cifar10_file(const std::string& path, ImageDataset& out);

// Per-channel mean and std of the training pixels in [0, 1] (R, G, B).
inline constexpr float kCifar10Mean[3] = {0.4914f, 0.4822f, 0.4465f};
inline constexpr float kCifar10Std[3] = {0.2470f, 0.2435f, 0.2616f};

}  // namespace tdrop
