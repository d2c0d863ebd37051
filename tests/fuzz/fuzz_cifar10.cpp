// libFuzzer target for the CIFAR-10 binary reader. The first input byte picks the mode:
//   0 mod 3: read_cifar10_file into an empty dataset;
//   1 mod 3: read_cifar10_file twice into the same dataset (the append path);
//   2 mod 3: load_cifar10(dir, "train"), whose five batch files are all the rest of the input.
// Every input must load or raise a one-line tdrop::Error naming the file; a loaded dataset must
// hold exactly the records of the input. Any other exception, crash, leak or sanitizer report is
// a bug.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "core/error.h"
#include "data/cifar10.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

using tdrop::fuzz::bug;
using tdrop::fuzz::LinkDir;
using tdrop::fuzz::MemFile;

struct Files {
  MemFile batch{"cifar10"};
  LinkDir dir;
  Files() {
    for (int i = 1; i <= 5; ++i) dir.link("data_batch_" + std::to_string(i) + ".bin", batch);
    dir.link("test_batch.bin", batch);
  }
};

Files& files() {
  static Files f;
  return f;
}

// `ds` must hold `copies` concatenated copies of the records in `bytes`.
void check_dataset(const tdrop::ImageDataset& ds, std::string_view bytes, int copies) {
  const auto rec = static_cast<size_t>(tdrop::kCifar10RecordBytes);
  if (bytes.empty() || bytes.size() % rec != 0) bug("a partial record was accepted");
  const size_t per_file = bytes.size() / rec;
  const size_t n = per_file * static_cast<size_t>(copies);
  if (ds.count != static_cast<int64_t>(n) || ds.channels != 3 || ds.height != 32 ||
      ds.width != 32 || ds.num_classes != 10)
    bug("bad dataset geometry");
  if (ds.labels.size() != n || ds.images.size() != n * (rec - 1)) bug("dataset sizes disagree");
  for (size_t i = 0; i < n; ++i) {
    const char* r = bytes.data() + (i % per_file) * rec;
    if (ds.labels[i] != static_cast<uint8_t>(r[0])) bug("label differs from the file");
    if (std::memcmp(ds.images.data() + i * (rec - 1), r + 1, rec - 1) != 0)
      bug("pixels differ from the file");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Files& fs = files();
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  fs.batch.assign(rest);
  const int mode = data[0] % 3;
  try {
    if (mode == 2) {
      check_dataset(tdrop::load_cifar10(fs.dir.path(), "train"), rest, 5);
    } else {
      tdrop::ImageDataset ds;
      tdrop::read_cifar10_file(fs.batch.path(), ds);
      if (mode == 1) tdrop::read_cifar10_file(fs.batch.path(), ds);
      check_dataset(ds, rest, mode == 1 ? 2 : 1);
    }
  } catch (const tdrop::Error& e) {
    tdrop::fuzz::check_message(e, {fs.batch.path(), fs.dir.path()});
  }
  return 0;
}
