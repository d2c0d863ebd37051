// libFuzzer target for the IDX reader (plain and gzip) and the Fashion-MNIST loader on top of it.
// The first input byte picks the mode:
//   even: the rest is one IDX file, read with read_idx;
//   odd:  the next two bytes (little-endian) give the length of an images file, which follows,
//         and the remaining bytes are the labels file; both are loaded with load_fashion_mnist.
// Every input must load or raise a one-line tdrop::Error naming a file; a loaded result must be
// consistent with its dims, and a gzip file is accepted only if zlib's inflate, run on its own,
// finds complete, checksummed members that hold exactly the bytes read. Any other exception,
// crash, leak or sanitizer report is a bug.
#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"
#include "data/fashion_mnist.h"
#include "data/idx.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

using tdrop::fuzz::bug;
using tdrop::fuzz::LinkDir;
using tdrop::fuzz::MemFile;

struct Files {
  MemFile single{"idx"}, images{"images"}, labels{"labels"};
  LinkDir dir;
  std::string images_path, labels_path;
  Files() {
    dir.link("t10k-images-idx3-ubyte.gz", images);
    dir.link("t10k-labels-idx1-ubyte.gz", labels);
    images_path = dir.path() + "/t10k-images-idx3-ubyte.gz";
    labels_path = dir.path() + "/t10k-labels-idx1-ubyte.gz";
  }
};

Files& files() {
  static Files f;
  return f;
}

// The bytes of `in` as gzread delivers them, decoded independently with inflate: gzip members
// one after another, each of which must end with a valid trailer; anything after the last member
// that does not start another one is ignored, as zlib does. Returns false for an incomplete or
// corrupt stream.
bool inflate_members(std::string_view in, std::string& out) {
  while (in.size() >= 2 && static_cast<uint8_t>(in[0]) == 0x1f && static_cast<uint8_t>(in[1]) == 0x8b) {
    z_stream z{};
    if (inflateInit2(&z, 15 + 16) != Z_OK) bug("inflateInit2 failed");
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z.avail_in = static_cast<uInt>(in.size());
    int rc = Z_OK;
    char buf[4096];
    while (rc == Z_OK) {
      z.next_out = reinterpret_cast<Bytef*>(buf);
      z.avail_out = sizeof buf;
      rc = inflate(&z, Z_NO_FLUSH);
      out.append(buf, sizeof buf - z.avail_out);
      if (rc == Z_BUF_ERROR && z.avail_in == 0) break;  // input ends inside the member
    }
    const size_t used = in.size() - z.avail_in;
    inflateEnd(&z);
    if (rc != Z_STREAM_END) return false;
    in.remove_prefix(used);
  }
  return true;
}

std::string idx_bytes(const tdrop::IdxArray& a) {
  std::string b = {0, 0, 0x08, static_cast<char>(a.dims.size())};
  for (int64_t d : a.dims)
    for (int s = 24; s >= 0; s -= 8) b += static_cast<char>((d >> s) & 0xFF);
  b.append(a.data.begin(), a.data.end());
  return b;
}

// An accepted gzip file must decode, independently, to exactly what the reader returned.
void check_gzip(std::string_view file, const tdrop::IdxArray& a) {
  if (file.size() < 2 || static_cast<uint8_t>(file[0]) != 0x1f ||
      static_cast<uint8_t>(file[1]) != 0x8b)
    return;
  std::string plain;
  if (!inflate_members(file, plain)) bug("an incomplete or corrupt gzip stream was accepted");
  if (plain != idx_bytes(a)) bug("gzip content differs from what the reader returned");
}

void check_idx(const tdrop::IdxArray& a) {
  if (a.dims.empty() || a.dims.size() > 4) bug("IDX rank out of range accepted");
  uint64_t n = 1;
  for (int64_t d : a.dims) {
    if (d <= 0) bug("non-positive IDX dim accepted");
    n *= static_cast<uint64_t>(d);
  }
  if (n != a.data.size()) bug("IDX data size does not match its dims");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Files& fs = files();
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) == 0) {
    fs.single.assign(rest);
    try {
      const tdrop::IdxArray a = tdrop::read_idx(fs.single.path());
      check_idx(a);
      check_gzip(rest, a);
    } catch (const tdrop::Error& e) {
      tdrop::fuzz::check_message(e, {fs.single.path()});
    }
    return 0;
  }
  if (rest.size() < 2) return 0;
  const size_t want = static_cast<uint8_t>(rest[0]) | (size_t{static_cast<uint8_t>(rest[1])} << 8);
  const std::string_view body = rest.substr(2);
  const size_t split = std::min(want, body.size());
  fs.images.assign(body.substr(0, split));
  fs.labels.assign(body.substr(split));
  try {
    const tdrop::ImageDataset ds = tdrop::load_fashion_mnist(fs.dir.path(), "test");
    if (ds.count <= 0 || ds.channels != 1 || ds.height <= 0 || ds.width <= 0)
      bug("Fashion-MNIST dataset with a bad geometry accepted");
    if (ds.images.size() != static_cast<size_t>(ds.count * ds.height * ds.width))
      bug("Fashion-MNIST image bytes do not match count x height x width");
    if (ds.labels.size() != static_cast<size_t>(ds.count)) bug("label count mismatch accepted");
    for (int64_t l : ds.labels)
      if (l < 0 || l >= ds.num_classes) bug("label out of range accepted");
  } catch (const tdrop::Error& e) {
    tdrop::fuzz::check_message(e, {fs.images_path, fs.labels_path});
  }
  return 0;
}
