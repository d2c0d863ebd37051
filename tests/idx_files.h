// Writing IDX files (and Fashion-MNIST splits made of them) for tests that need data files of
// their own: valid ones, or any header bytes for the malformed-input tests.
#pragma once
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace tdrop::testing {

using Bytes = std::vector<uint8_t>;

// Header with an arbitrary dtype byte and raw uint32 dims, so tests can write invalid ones.
inline Bytes idx_header(uint8_t dtype, const std::vector<uint32_t>& dims) {
  Bytes b = {0, 0, dtype, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(d >> s));
  return b;
}

inline Bytes idx_file(const std::vector<uint32_t>& dims, const Bytes& payload) {
  Bytes b = idx_header(0x08, dims);
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

inline void write_plain(const std::string& path, const Bytes& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline void write_gzip(const std::string& path, const Bytes& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  if (!b.empty()) {
    ASSERT_EQ(gzwrite(f, b.data(), static_cast<unsigned>(b.size())), int(b.size()));
  }
  ASSERT_EQ(gzclose(f), Z_OK);
}

inline Bytes random_bytes(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> dist(0, 255);
  Bytes b(n);
  for (auto& x : b) x = static_cast<uint8_t>(dist(rng));
  return b;
}

// <dir>/<prefix>-images-idx3-ubyte.gz and -labels-idx1-ubyte.gz: n random 28x28 images with
// random labels 0-9 (prefix "train" or "t10k").
inline void write_fashion_mnist_split(const std::string& dir, const std::string& prefix, int n,
                                      std::mt19937& rng) {
  const uint32_t un = static_cast<uint32_t>(n);
  write_gzip(dir + "/" + prefix + "-images-idx3-ubyte.gz",
             idx_file({un, 28, 28}, random_bytes(size_t(n) * 28 * 28, rng)));
  Bytes labels = random_bytes(size_t(n), rng);
  for (auto& l : labels) l %= 10;
  write_gzip(dir + "/" + prefix + "-labels-idx1-ubyte.gz", idx_file({un}, labels));
}

}  // namespace tdrop::testing
