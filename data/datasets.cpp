#include "data/datasets.h"

#include "core/error.h"
#include "data/loader.h"

namespace tdrop {

const DatasetSpec& find_dataset(const std::string& name) {
  static const DatasetSpec fashion{"fashion-mnist", kFashionMnistDir, kFashionMnistMean,
                                   kFashionMnistStd};
  if (name == fashion.name) return fashion;
  fail("unknown dataset '", name, "': expected fashion-mnist");
}

ImageDataset load_dataset(const std::string& name, const std::string& dir,
                          const std::string& split) {
  const DatasetSpec& spec = find_dataset(name);
  return load_fashion_mnist(dir.empty() ? spec.default_dir : dir, split);
}

}  // namespace tdrop
