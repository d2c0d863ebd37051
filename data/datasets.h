// Datasets by name, as the command line names them.
#pragma once
#include <string>
#include <vector>

#include "data/fashion_mnist.h"

namespace tdrop {

struct DatasetSpec {
  std::string name;         // "fashion-mnist"
  std::string default_dir;  // where the Debian package installs it
  std::vector<float> mean, std;  // per-channel normalisation of pixels in [0, 1]
  bool augment_by_default;       // pad-crop + flip in training (the CIFAR recipe)
};

const DatasetSpec& find_dataset(const std::string& name);
// dir empty = the dataset's default directory. pad_to > 0 centres images in pad_to x pad_to
// (Fashion-MNIST's 28x28 for the 32x32 CIFAR networks).
ImageDataset load_dataset(const std::string& name, const std::string& dir, const std::string& split,
                          int64_t pad_to = 0);

}  // namespace tdrop
