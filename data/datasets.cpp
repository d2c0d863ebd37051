#include "data/datasets.h"

#include "core/error.h"
#include "data/augment.h"
#include "data/cifar10.h"

namespace tdrop {

const DatasetSpec& find_dataset(const std::string& name) {
  // Mean and std of the training pixels (in [0, 1]) of each dataset.
  static const DatasetSpec fashion{"fashion-mnist", kFashionMnistDir, {0.2860f}, {0.3530f}, false};
  static const DatasetSpec cifar{"cifar10", "", {0.4914f, 0.4822f, 0.4465f},
                                 {0.2470f, 0.2435f, 0.2616f}, true};
  if (name == fashion.name) return fashion;
  if (name == cifar.name) return cifar;
  fail("unknown dataset '", name, "': expected fashion-mnist or cifar10");
}

ImageDataset load_dataset(const std::string& name, const std::string& dir, const std::string& split,
                          int64_t pad_to) {
  const DatasetSpec& spec = find_dataset(name);
  ImageDataset ds;
  if (spec.name == "cifar10") {
    TDROP_CHECK(!dir.empty(), "cifar10: pass --data-dir DIR, the folder holding data_batch_1.bin ..."
                " test_batch.bin (the CIFAR-10 binary version)");
    ds = load_cifar10(dir, split);
  } else {
    ds = load_fashion_mnist(dir.empty() ? spec.default_dir : dir, split);
  }
  if (pad_to > 0 && (ds.height < pad_to || ds.width < pad_to)) ds = pad_images(ds, pad_to, pad_to);
  return ds;
}

}  // namespace tdrop
