// Datasets by name, as the command line names them.
#pragma once
#include <string>

#include "data/fashion_mnist.h"

namespace tdrop {

struct DatasetSpec {
  std::string name;         // "fashion-mnist"
  std::string default_dir;  // where the Debian package installs it
  float mean, std;          // normalisation of pixels in [0, 1]
};

const DatasetSpec& find_dataset(const std::string& name);
// dir empty = the dataset's default directory.
ImageDataset load_dataset(const std::string& name, const std::string& dir, const std::string& split);

}  // namespace tdrop
