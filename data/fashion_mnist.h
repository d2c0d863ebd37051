// Fashion-MNIST loader: 28x28 grayscale images in 10 classes, read from the IDX files
// shipped by the Debian package dataset-fashion-mnist.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tdrop {

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

struct ImageDataset {
  int64_t count = 0, channels = 1, height = 0, width = 0;
  std::vector<uint8_t> images;  // count x channels x height x width, row-major
  std::vector<int64_t> labels;  // count entries in [0, num_classes)
  int64_t num_classes = 10;
};

// split is "train" (60000 images) or "test" (10000). Reads <prefix>-images-idx3-ubyte.gz and
// <prefix>-labels-idx1-ubyte.gz from dir, where prefix is "train" or "t10k".
ImageDataset load_fashion_mnist(const std::string& dir, const std::string& split);

}  // namespace tdrop
