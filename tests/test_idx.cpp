// IDX reader and Fashion-MNIST loader: round trips through files written here, every
// malformed-input path (each must throw a message naming the file and the reason), and,
// when the Debian data set is installed, the real files.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/fashion_mnist.h"
#include "data/idx.h"
#include "tests/expect_error.h"
#include "tests/idx_files.h"

namespace fs = std::filesystem;
using tdrop::read_idx;

namespace {

using namespace tdrop::testing;

// stmt must throw a tdrop::Error whose message holds every one of the strings that follow.
#define EXPECT_ERROR(stmt, ...) \
  tdrop::testing::expect_error([&] { (void)(stmt); }, {__VA_ARGS__})

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           ("tdrop_idx_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
            info->name());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

TEST_F(IdxTest, RoundTripPlainAndGzip) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const std::vector<std::vector<uint32_t>> shapes = {{1}, {13}, {3, 5, 7}, {2, 3, 1, 5}, {4, 9}};
  for (const auto& dims : shapes) {
    size_t n = 1;
    for (auto d : dims) n *= d;
    const Bytes payload = random_bytes(n, rng);
    const std::vector<int64_t> want_dims(dims.begin(), dims.end());
    for (bool gz : {false, true}) {
      const std::string p = path(gz ? "a.idx.gz" : "a.idx");
      if (gz) write_gzip(p, idx_file(dims, payload));
      else write_plain(p, idx_file(dims, payload));
      const tdrop::IdxArray a = read_idx(p);
      EXPECT_EQ(a.dims, want_dims) << (gz ? "gzip" : "plain");
      EXPECT_EQ(a.data, payload) << (gz ? "gzip" : "plain");
    }
  }
}

// Larger than the reader's chunk size, so the chunked loop is exercised across boundaries.
TEST_F(IdxTest, RoundTripMultiChunk) {
  std::mt19937 rng(std::random_device{}());
  const std::vector<uint32_t> dims = {3, 701, 1009};
  const Bytes payload = random_bytes(3 * 701 * 1009, rng);
  const std::string p = path("big.gz");
  write_gzip(p, idx_file(dims, payload));
  const tdrop::IdxArray a = read_idx(p);
  EXPECT_EQ(a.dims, (std::vector<int64_t>{3, 701, 1009}));
  EXPECT_TRUE(a.data == payload);
}

TEST_F(IdxTest, MissingFile) {
  const std::string p = path("nope.idx");
  EXPECT_ERROR(read_idx(p), p, "No such file or directory");
}

TEST_F(IdxTest, EmptyFile) {
  const std::string p = path("empty.idx");
  write_plain(p, {});
  EXPECT_ERROR(read_idx(p), p, "empty file");
}

TEST_F(IdxTest, BadMagic) {
  const std::string p = path("magic.idx");
  write_plain(p, {0x12, 0x34, 0x08, 0x01, 0, 0, 0, 1, 7});
  EXPECT_ERROR(read_idx(p), p, "bad IDX magic 0x12 0x34");
}

TEST_F(IdxTest, UnsupportedDtype) {
  const std::string p = path("float.idx");
  Bytes b = idx_header(0x0D, {2});
  b.resize(b.size() + 8);
  write_plain(p, b);
  EXPECT_ERROR(read_idx(p), "unsupported IDX dtype 0x0D in " + p);
}

TEST_F(IdxTest, NdimOutOfRange) {
  const std::string p0 = path("ndim0.idx");
  write_plain(p0, idx_header(0x08, {}));
  EXPECT_ERROR(read_idx(p0), p0, "ndim 0 out of range");
  const std::string p5 = path("ndim5.idx");
  write_plain(p5, idx_file({1, 1, 1, 1, 1}, {9}));
  EXPECT_ERROR(read_idx(p5), p5, "ndim 5 out of range");
}

TEST_F(IdxTest, TruncatedHeader) {
  const std::string p = path("hdr.idx");
  Bytes b = idx_header(0x08, {3, 4});
  b.erase(b.end() - 3, b.end());
  write_plain(p, b);
  EXPECT_ERROR(read_idx(p), p, "truncated IDX header");
}

TEST_F(IdxTest, ZeroDim) {
  const std::string p = path("zero.idx");
  write_plain(p, idx_header(0x08, {3, 0, 2}));
  EXPECT_ERROR(read_idx(p), p, "dim 1 is 0");
}

// Headers claiming more than 2^31 elements must be rejected from the header alone; a tiny
// file claiming exactly 2^31 must fail as truncated without allocating for the claim.
TEST_F(IdxTest, HugeDims) {
  const std::string p = path("huge.idx");
  write_plain(p, idx_file({0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff}, {1, 2, 3}));
  EXPECT_ERROR(read_idx(p), p, "exceed the limit");
  const std::string q = path("over.idx");
  write_plain(q, idx_file({2, 0x40000001}, {1, 2, 3}));
  EXPECT_ERROR(read_idx(q), q, "exceed the limit");
  const std::string r = path("limit.idx");
  write_plain(r, idx_file({2, 0x40000000}, {1, 2, 3}));
  EXPECT_ERROR(read_idx(r), r, "truncated: expected 2147483648 bytes of data, got 3");
}

TEST_F(IdxTest, TruncatedPayload) {
  const Bytes file = idx_file({3, 5, 7}, Bytes(100, 42));  // needs 105
  const std::string p = path("short.idx");
  write_plain(p, file);
  EXPECT_ERROR(read_idx(p), p, "truncated: expected 105 bytes of data, got 100");
  const std::string g = path("short.idx.gz");
  write_gzip(g, file);
  EXPECT_ERROR(read_idx(g), g, "truncated: expected 105 bytes of data, got 100");
}

// A gzip file cut off mid-stream is reported as truncated, not as a crash or a success.
TEST_F(IdxTest, TruncatedGzipStream) {
  std::mt19937 rng(std::random_device{}());
  const std::string g = path("cut.gz");
  write_gzip(g, idx_file({64, 64}, random_bytes(64 * 64, rng)));
  fs::resize_file(g, fs::file_size(g) / 2);
  // zlib's own reason, without the "<fd:N>: " it puts before it for a file opened by descriptor.
  EXPECT_ERROR(read_idx(g), g, "truncated", "(gzip: unexpected end of file)");
  EXPECT_EQ(tdrop::testing::error_message([&] { read_idx(g); }).find("<fd:"), std::string::npos);
}

TEST_F(IdxTest, TrailingBytes) {
  Bytes file = idx_file({2, 2}, {1, 2, 3, 4});
  file.push_back(99);
  const std::string p = path("trail.idx");
  write_plain(p, file);
  EXPECT_ERROR(read_idx(p), p, "trailing bytes");
  const std::string g = path("trail.idx.gz");
  write_gzip(g, file);
  EXPECT_ERROR(read_idx(g), g, "trailing bytes");
}

TEST_F(IdxTest, CorruptGzip) {
  // A valid gzip member header, then 0xFF bytes: the first deflate block has the reserved
  // block type 3, which zlib reports as a data error.
  Bytes b = {0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03};
  b.resize(b.size() + 64, 0xFF);
  const std::string p = path("corrupt.gz");
  write_plain(p, b);
  EXPECT_ERROR(read_idx(p), p, "corrupt");
}

// A valid deflate stream with a wrong CRC in the trailer must not be accepted.
TEST_F(IdxTest, GzipBadChecksum) {
  const std::string p = path("crc.gz");
  write_gzip(p, idx_file({4}, {1, 2, 3, 4}));
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(-8, std::ios::end);  // CRC32 field of the gzip trailer
  f.put('\x5a').put('\x5a');
  f.close();
  EXPECT_ERROR(read_idx(p), p, "corrupt");
}

class FashionMnistTest : public IdxTest {
 protected:
  // Writes a tiny split: n images of 28x28 (random pixels, returned) and the given labels.
  Bytes write_split(const std::string& prefix, int n, const Bytes& labels) {
    std::mt19937 rng(std::random_device{}());
    const uint32_t un = static_cast<uint32_t>(n);
    const Bytes pixels = random_bytes(size_t(n) * 28 * 28, rng);
    write_gzip(path(prefix + "-images-idx3-ubyte.gz"), idx_file({un, 28, 28}, pixels));
    write_gzip(path(prefix + "-labels-idx1-ubyte.gz"),
               idx_file({static_cast<uint32_t>(labels.size())}, labels));
    return pixels;
  }
};

TEST_F(FashionMnistTest, LoadsFakeSplits) {
  const Bytes train_pixels = write_split("train", 5, {0, 9, 3, 3, 7});
  const Bytes test_pixels = write_split("t10k", 2, {1, 2});
  const tdrop::ImageDataset tr = tdrop::load_fashion_mnist(dir_.string(), "train");
  EXPECT_EQ(tr.count, 5);
  EXPECT_EQ(tr.channels, 1);
  EXPECT_EQ(tr.height, 28);
  EXPECT_EQ(tr.width, 28);
  EXPECT_EQ(tr.num_classes, 10);
  EXPECT_TRUE(tr.images == train_pixels) << "the pixels are not the file's, in its order";
  EXPECT_EQ(tr.labels, (std::vector<int64_t>{0, 9, 3, 3, 7}));
  const tdrop::ImageDataset te = tdrop::load_fashion_mnist(dir_.string(), "test");
  EXPECT_EQ(te.count, 2);
  EXPECT_TRUE(te.images == test_pixels);
  EXPECT_EQ(te.labels, (std::vector<int64_t>{1, 2}));
}

TEST_F(FashionMnistTest, BadLabel) {
  write_split("train", 5, {0, 1, 2, 12, 4});
  EXPECT_ERROR(tdrop::load_fashion_mnist(dir_.string(), "train"),
               path("train-labels-idx1-ubyte.gz"), "label 12 at index 3");
  write_split("train", 5, {9, 1, 10, 0, 4});  // the first label past the 10 classes
  EXPECT_ERROR(tdrop::load_fashion_mnist(dir_.string(), "train"),
               path("train-labels-idx1-ubyte.gz"), "label 10 at index 2", "[0, 9]");
}

TEST_F(FashionMnistTest, CountMismatch) {
  write_split("train", 5, {0, 1, 2});
  EXPECT_ERROR(tdrop::load_fashion_mnist(dir_.string(), "train"), "5 images", "3 labels");
}

TEST_F(FashionMnistTest, WrongRank) {
  write_split("train", 2, {0, 1});
  const std::string p = path("train-images-idx3-ubyte.gz");
  write_gzip(p, idx_file({2, 784}, Bytes(2 * 784)));
  EXPECT_ERROR(tdrop::load_fashion_mnist(dir_.string(), "train"), p, "expected 3-d images");
}

TEST_F(FashionMnistTest, MissingLabelFile) {
  write_split("train", 5, {0, 1, 2, 3, 4});
  const std::string p = path("train-labels-idx1-ubyte.gz");
  fs::remove(p);
  EXPECT_ERROR(tdrop::load_fashion_mnist(dir_.string(), "train"), p, "not found",
               "apt-get install dataset-fashion-mnist", "--data-dir");
}

TEST_F(FashionMnistTest, BadSplit) {
  EXPECT_ERROR(tdrop::load_fashion_mnist(dir_.string(), "valid"), "\"valid\"");
}

// The real data set, when the Debian package is installed (TDROP_DATA_DIR overrides the path).
TEST(FashionMnistReal, TrainAndTestSplits) {
  const char* env = std::getenv("TDROP_DATA_DIR");
  const std::string dir = env && *env ? env : tdrop::kFashionMnistDir;
  if (!fs::exists(fs::path(dir) / "train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not found in " << dir
                 << "; the package dataset-fashion-mnist is not installed";
  const tdrop::ImageDataset tr = tdrop::load_fashion_mnist(dir, "train");
  EXPECT_EQ(tr.count, 60000);
  EXPECT_EQ(tr.height, 28);
  EXPECT_EQ(tr.width, 28);
  EXPECT_EQ(tr.images.size(), 60000u * 28 * 28);
  std::array<int, 10> per_class{};
  for (int64_t y : tr.labels) {
    ASSERT_GE(y, 0);
    ASSERT_LE(y, 9);
    ++per_class[static_cast<size_t>(y)];
  }
  for (int c = 0; c < 10; ++c) EXPECT_EQ(per_class[c], 6000) << "class " << c;
  const tdrop::ImageDataset te = tdrop::load_fashion_mnist(dir, "test");
  EXPECT_EQ(te.count, 10000);
  EXPECT_EQ(te.height, 28);
  EXPECT_EQ(te.width, 28);
  EXPECT_EQ(te.labels.size(), 10000u);
}

}  // namespace
