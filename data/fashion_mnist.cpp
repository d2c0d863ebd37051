#include "data/fashion_mnist.h"

#include <filesystem>

#include "core/error.h"
#include "data/idx.h"

namespace tdrop {
namespace {

// Resolves dir/name; a missing file is the common first-run problem, so the message
// says how to get the data rather than just repeating errno.
std::string data_file(const std::string& dir, const std::string& name) {
  const std::string path = (std::filesystem::path(dir) / name).string();
  std::error_code ec;
  TDROP_CHECK(std::filesystem::exists(path, ec), "fashion-mnist: ", path,
              " not found; install the Debian package dataset-fashion-mnist "
              "(apt-get install dataset-fashion-mnist) or pass --data-dir DIR");
  return path;
}

}  // namespace

ImageDataset load_fashion_mnist(const std::string& dir, const std::string& split) {
  TDROP_CHECK(split == "train" || split == "test",
              "fashion-mnist: split must be \"train\" or \"test\", got \"", split, "\"");
  const std::string prefix = split == "train" ? "train" : "t10k";
  const std::string img_path = data_file(dir, prefix + "-images-idx3-ubyte.gz");
  const std::string lbl_path = data_file(dir, prefix + "-labels-idx1-ubyte.gz");

  IdxArray img = read_idx(img_path);
  IdxArray lbl = read_idx(lbl_path);
  TDROP_CHECK(img.dims.size() == 3, img_path, ": expected 3-d images [count, height, width], got ",
              shape_str(img.dims));
  TDROP_CHECK(lbl.dims.size() == 1, lbl_path, ": expected 1-d labels [count], got ",
              shape_str(lbl.dims));
  TDROP_CHECK(img.dims[0] == lbl.dims[0], "fashion-mnist: ", img_path, " has ", img.dims[0],
              " images but ", lbl_path, " has ", lbl.dims[0], " labels");

  ImageDataset ds;
  ds.count = img.dims[0];
  ds.height = img.dims[1];
  ds.width = img.dims[2];
  ds.labels.reserve(lbl.data.size());
  for (size_t i = 0; i < lbl.data.size(); ++i) {
    TDROP_CHECK(lbl.data[i] < ds.num_classes, lbl_path, ": label ", int{lbl.data[i]},
                " at index ", i, " is out of range [0, ", ds.num_classes - 1, "]");
    ds.labels.push_back(lbl.data[i]);
  }
  ds.images = std::move(img.data);
  return ds;
}

}  // namespace tdrop
