// Hostile files for every reader: safetensors (load_safetensors and load_checkpoint), IDX (plain
// and gzip) with the Fashion-MNIST loader, and CIFAR-10 binary. Each file is cut at every prefix
// length (a sample of them for CIFAR-10), has single bits flipped in turn (every bit, or for
// CIFAR-10 pixels a sample), or claims sizes far beyond what it holds. The
// reader must either return exactly the content the file holds or raise a tdrop::Error whose
// message is one line naming the file; any other exception type or a crash fails the test. Also
// wrong model/checkpoint pairs, broken model configs and resume metadata, non-finite weights, and
// the real `tdrop eval` binary on corrupt checkpoints (ctest sets TDROP_TEST_BINARY_DIR; without
// it that test skips).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

#include "tests/temp_dir.h"
#include "core/error.h"
#include "core/json_parse.h"
#include "core/safetensors.h"
#include "data/cifar10.h"
#include "data/fashion_mnist.h"
#include "data/idx.h"
#include "layers/optimizer.h"
#include "models/checkpoint.h"
#include "models/registry.h"
#include "models/resume.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace tdrop {
namespace {

using ::tdrop::testing::TempDir;

// Plain writes (no fsync): these tests write thousands of small files.
void write_bytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string flip(std::string bytes, size_t byte, int bit) {
  bytes[byte] = static_cast<char>(bytes[byte] ^ (1 << bit));
  return bytes;
}

std::string u64_le(uint64_t v) {
  std::string b;
  for (int i = 0; i < 8; ++i) b += static_cast<char>((v >> (8 * i)) & 0xFF);
  return b;
}

// A safetensors file from a header text and a data buffer.
std::string safetensors_bytes(const std::string& header, const std::string& data = "") {
  return u64_le(header.size()) + header + data;
}

// {"a":{"a": ... 0 ... }}, n objects deep.
std::string deep_objects(size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += "{\"a\":";
  return s + "0" + std::string(n, '}');
}

// Runs fn. Returns the message of the tdrop::Error it raised, or nullopt if it returned. Any other
// exception is a test failure (and is returned as a message, so callers need no special case).
template <class F>
std::optional<std::string> error_from(F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return std::string(e.what());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a tdrop::Error but " << typeid(e).name() << ": " << e.what();
    return std::string(e.what());
  }
  return std::nullopt;
}

// The reader raised a one-line error that names `path` and contains every piece of `needles`.
void expect_error(const std::optional<std::string>& msg, const std::string& path,
                  const std::vector<std::string>& needles = {}) {
  ASSERT_TRUE(msg.has_value()) << "no error for " << path;
  EXPECT_EQ(msg->find('\n'), std::string::npos) << "not one line: " << *msg;
  EXPECT_NE(msg->find(path), std::string::npos) << "does not name " << path << ": " << *msg;
  for (const std::string& n : needles)
    EXPECT_NE(msg->find(n), std::string::npos) << "message \"" << *msg << "\" lacks \"" << n << "\"";
}

// A message that, if present, names the file on one line.
void expect_clean_if_error(const std::optional<std::string>& msg, const std::string& path) {
  if (msg) expect_error(msg, path);
}

float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint32_t float_to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif
#else
constexpr bool kAddressSanitizer = false;
#endif

// ---------------------------------------------------------------------------------------------
// safetensors and checkpoints

// A 6-4-3 MLP whose parameters hold known values (element i of the k-th tensor is
// 0.25 * (i + 1) * (k % 2 ? -1 : 1)), saved as a checkpoint.
class HostileCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = {{"input_features", 6}, {"hidden", {4}}, {"num_classes", 3}};
    auto model = build_model("mlp", config_);
    int k = 0;
    for (auto& [name, t] : model->named_parameters()) {
      std::vector<float> v(static_cast<size_t>(t.numel()));
      for (size_t i = 0; i < v.size(); ++i)
        v[i] = 0.25f * static_cast<float>(i + 1) * (k % 2 ? -1.0f : 1.0f);
      std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(float));
      params_[name] = v;
      ++k;
    }
    good_path_ = dir_.file("good.safetensors");
    save_checkpoint(good_path_, *model, "mlp", config_);
    good_ = read_bytes(good_path_);
    header_end_ = 8;
    for (int i = 7; i >= 0; --i) header_len_ = (header_len_ << 8) | static_cast<uint8_t>(good_[i]);
    header_end_ = 8 + header_len_;
  }

  // The tensor that holds data byte `offset` (relative to the data buffer), the index of its
  // float and the byte within that float. Tensors are laid out in name order (encode's contract).
  struct Where {
    std::string name;
    size_t index, byte;
  };
  Where locate(uint64_t offset) const {
    uint64_t begin = 0;
    for (const auto& [name, v] : params_) {
      const uint64_t end = begin + 4 * v.size();
      if (offset < end) return {name, static_cast<size_t>((offset - begin) / 4),
                                static_cast<size_t>((offset - begin) % 4)};
      begin = end;
    }
    ADD_FAILURE() << "offset " << offset << " is past the data";
    return {"", 0, 0};
  }

  // Writes a copy of the good checkpoint after `edit` and returns its path.
  template <class F>
  std::string edited(const std::string& name, F&& edit) {
    SafetensorsFile f = decode_safetensors(good_, good_path_);
    edit(f);
    const std::string path = dir_.file(name);
    write_bytes(path, encode_safetensors(f));
    return path;
  }

  TempDir dir_;
  json config_;
  std::map<std::string, std::vector<float>> params_;
  std::string good_path_, good_;
  uint64_t header_len_ = 0, header_end_ = 0;
};

TEST_F(HostileCheckpoint, TheGoodFileLoadsWithItsValues) {
  const Checkpoint ck = load_checkpoint(good_path_);
  EXPECT_EQ(ck.model_name, "mlp");
  EXPECT_EQ(ck.model_config.at("hidden"), json({4}));
  const auto loaded = ck.model->named_parameters();
  ASSERT_EQ(loaded.size(), 4u);
  for (const auto& [name, t] : loaded) EXPECT_EQ(t.to_vector<float>(), params_.at(name)) << name;
  EXPECT_EQ(params_.at("1.weight").size(), 24u);
  EXPECT_EQ(good_.size(), header_end_ + 4 * (24 + 4 + 12 + 3));
}

// A FIFO would block the open until a writer came, a device would never end: neither is read.
TEST_F(HostileCheckpoint, FifosAndDevicesAreNotFiles) {
  const std::string fifo = dir_.file("model.safetensors.fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  for (const std::string& path : {fifo, std::string("/dev/zero")}) {
    expect_error(error_from([&] { load_safetensors(path); }), path, {"not a regular file"});
    expect_error(error_from([&] { load_checkpoint(path); }), path, {"not a regular file"});
  }
}

// A regular file whose reads fail (Linux's /proc/self/mem fails at address 0): the read error,
// naming the file, not a "truncated" verdict on the bytes read before it.
TEST_F(HostileCheckpoint, AFailingReadIsAReadError) {
  const std::string path = "/proc/self/mem";
  if (!fs::is_regular_file(path)) GTEST_SKIP() << path << " is not there to fail a read";
  expect_error(error_from([&] { load_safetensors(path); }), path, {"error while reading"});
  expect_error(error_from([&] { load_checkpoint(path); }), path, {"error while reading"});
}

TEST_F(HostileCheckpoint, EveryTruncationIsAnError) {
  const std::string path = dir_.file("cut.safetensors");
  for (size_t len = 0; len < good_.size(); ++len) {
    SCOPED_TRACE("length " + std::to_string(len));
    write_bytes(path, std::string_view(good_).substr(0, len));
    expect_error(error_from([&] { load_safetensors(path); }), path);
    expect_error(error_from([&] { load_checkpoint(path); }), path);
  }
}

// Every single-bit flip: in the length field it is always an error; in the data it changes
// exactly that bit of that parameter, and the checkpoint loads unless that made the weight NaN or
// Inf, which is an error naming it; in the header it is an error or a file that still loads.
// Nothing else.
TEST_F(HostileCheckpoint, EverySingleBitFlip) {
  const std::string path = dir_.file("flipped.safetensors");
  size_t rejected_header = 0, accepted_header = 0, nonfinite_data = 0;
  for (size_t byte = 0; byte < good_.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      SCOPED_TRACE("byte " + std::to_string(byte) + " bit " + std::to_string(bit));
      write_bytes(path, flip(good_, byte, bit));
      std::optional<SafetensorsFile> raw;
      const auto raw_err = error_from([&] { raw = load_safetensors(path); });
      // load_checkpoint starts with load_safetensors: a file that fails there fails the same way.
      std::optional<Checkpoint> ck;
      const auto ck_err = raw_err ? raw_err : error_from([&] { ck = load_checkpoint(path); });
      expect_clean_if_error(raw_err, path);
      expect_clean_if_error(ck_err, path);
      if (byte < 8) {
        EXPECT_TRUE(raw_err.has_value()) << "a corrupt header length was accepted";
        EXPECT_TRUE(ck_err.has_value());
      } else if (byte >= header_end_) {
        ASSERT_FALSE(raw_err.has_value()) << *raw_err;
        const Where w = locate(byte - header_end_);
        std::vector<float> want = params_.at(w.name);
        want[w.index] = bits_to_float(float_to_bits(want[w.index]) ^ (1u << (8 * w.byte + bit)));
        const std::string& got_bytes = raw->tensors.at(w.name).bytes;
        ASSERT_EQ(got_bytes.size(), 4 * want.size()) << w.name;
        EXPECT_EQ(0, std::memcmp(got_bytes.data(), want.data(), got_bytes.size()));
        if (!std::isfinite(want[w.index])) {
          expect_error(ck_err, path, {"'" + w.name + "'", "non-finite"});
          ++nonfinite_data;
          continue;
        }
        ASSERT_FALSE(ck_err.has_value()) << *ck_err;
        for (const auto& [name, t] : ck->model->named_parameters()) {
          const std::vector<float> got = t.to_vector<float>();
          const std::vector<float>& expect = name == w.name ? want : params_.at(name);
          ASSERT_EQ(got.size(), expect.size());
          EXPECT_EQ(0, std::memcmp(got.data(), expect.data(), 4 * got.size())) << name;
        }
      } else {
        (ck_err ? rejected_header : accepted_header)++;
      }
    }
  }
  // Most header flips break the JSON or a name, shape or offset; a few (inside metadata values
  // or padding-like spots) leave a loadable file.
  EXPECT_GT(rejected_header, 8 * header_len_ / 2);
  EXPECT_GT(accepted_header, 0u);
  // The top exponent bit of the weights in [1, 2) sets every exponent bit: Inf or NaN.
  EXPECT_GT(nonfinite_data, 0u);
}

TEST_F(HostileCheckpoint, OversizedHeaderLength) {
  const std::string path = dir_.file("oversized.safetensors");
  for (uint64_t n : {uint64_t{good_.size() - 7}, uint64_t{1} << 32, uint64_t{1} << 63,
                     ~uint64_t{0}}) {
    SCOPED_TRACE("header length " + std::to_string(n));
    write_bytes(path, u64_le(n) + good_.substr(8));
    expect_error(error_from([&] { load_safetensors(path); }), path,
                 {"header length " + std::to_string(n), "exceeds the file size"});
    expect_error(error_from([&] { load_checkpoint(path); }), path, {"header length"});
  }
  // A header within the file but above the 100 MiB limit is refused before it is parsed.
  const uint64_t big = (uint64_t{100} << 20) + 8;
  std::string huge = u64_le(big);
  huge.resize(8 + big, ' ');
  expect_error(error_from([&] { decode_safetensors(huge, "huge.safetensors"); }),
               "huge.safetensors", {"exceeds the limit"});
}

// Sizes that would need vast memory if believed: each is refused before anything is allocated.
TEST_F(HostileCheckpoint, OversizedShapesAndOffsets) {
  const std::string path = dir_.file("shapes.safetensors");
  const std::string four(4, '\0');
  struct Case {
    std::string header, why;
  };
  const std::vector<Case> cases = {
      {R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}})",
       "element count overflow"},
      {R"({"w":{"dtype":"F32","shape":[1048576,1048576],"data_offsets":[0,4]}})",
       "size mismatch"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,9223372036854775807]}})",
       "out of range of the data buffer"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}})",
       "are not 0 <= begin <= end"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,1e30]}})",
       "are not 0 <= begin <= end"},
      {R"({"w":{"dtype":"F32","shape":[-1,-4],"data_offsets":[0,4]}})",
       "negative dimension"},
      {R"({"w":{"dtype":"F32","shape":[1e300],"data_offsets":[0,4]}})",
       "is not a 64-bit integer"},
      // Regression: an empty tensor whose other dims multiply past 2^63 was accepted, and its
      // strides then overflowed.
      {R"({"w":{"dtype":"F32","shape":[0,4611686018427387904,4],"data_offsets":[0,0]}})",
       "element count overflow"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.header);
    write_bytes(path, safetensors_bytes(c.header, four));
    expect_error(error_from([&] { load_safetensors(path); }), path, {"tensor \"w\"", c.why});
    expect_error(error_from([&] { load_checkpoint(path); }), path, {c.why});
  }
  // A large but representable empty tensor is fine.
  const SafetensorsFile ok = decode_safetensors(
      safetensors_bytes(R"({"w":{"dtype":"U8","shape":[0,1099511627776],"data_offsets":[0,0]}})"),
      "ok");
  EXPECT_EQ(ok.tensors.at("w").shape, (std::vector<int64_t>{0, int64_t{1} << 40}));
  EXPECT_TRUE(ok.tensors.at("w").bytes.empty());
}

// Regression: a header value nested a million levels deep overflowed the stack when an error
// message printed it. Nesting is now refused while parsing, wherever it is.
TEST_F(HostileCheckpoint, DeeplyNestedHeader) {
  const std::string path = dir_.file("deep.safetensors");
  const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  for (const std::string& header :
       {R"({"w":{"dtype":"F32","shape":[)" + deep + R"(],"data_offsets":[0,0]}})",
        R"({"w":{"dtype":"F32","shape":[],"data_offsets":[)" + deep + R"(,0]}})",
        R"({"__metadata__":{"k":)" + deep + "}}", deep, deep_objects(100000)}) {
    write_bytes(path, safetensors_bytes(header));
    expect_error(error_from([&] { load_safetensors(path); }), path, {"nests deeper than 16"});
    expect_error(error_from([&] { load_checkpoint(path); }), path, {"nests deeper than 16"});
  }
  // The legitimate depth of a header (object, entry, shape array) is well inside the limit.
  const SafetensorsFile ok = decode_safetensors(
      safetensors_bytes(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "ab"), "ok");
  EXPECT_EQ(ok.tensors.at("w").bytes, "ab");
  // Brackets inside a string are text, also after an escaped quote or backslash.
  const std::string brackets = std::string(100000, '[') + std::string(100000, '{');
  const SafetensorsFile text = decode_safetensors(
      safetensors_bytes(R"({"__metadata__":{"k":"\")" + brackets + R"(\\"}})"), "text");
  EXPECT_EQ(text.metadata.at("k"), "\"" + brackets + "\\");
}

// Regression: the header was parsed with a callback, and nlohmann's callback parser rescans the
// enclosing object at every closing brace: 100k entries took six minutes. A hang here would time
// out ctest; the file itself must load, every entry in it.
TEST_F(HostileCheckpoint, HeaderOfManyEntries) {
  constexpr int kEntries = 100000;
  std::string header = R"({"__metadata__":{"model":"mlp","config":)" + json(config_.dump()).dump() +
                       "}";
  for (int i = 0; i < kEntries; ++i)
    header += ",\"t" + std::to_string(i) + R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})";
  header += "}";
  const std::string path = dir_.file("many.safetensors");
  write_bytes(path, safetensors_bytes(header));
  const SafetensorsFile f = load_safetensors(path);
  EXPECT_EQ(f.tensors.size(), static_cast<size_t>(kEntries));
  EXPECT_EQ(f.tensors.at("t99999").shape, std::vector<int64_t>{0});
  EXPECT_EQ(f.metadata.at("model"), "mlp");
  // As a checkpoint it lacks the model's weights.
  expect_error(error_from([&] { load_checkpoint(path); }), path, {"'1.weight'", "missing"});
}

TEST_F(HostileCheckpoint, WrongModelCheckpointPairs) {
  {
    const std::string p = edited("misshaped.safetensors", [](SafetensorsFile& f) {
      f.tensors.at("1.weight") = {"F32", {5, 6}, std::string(5 * 6 * 4, '\0')};
    });
    expect_error(error_from([&] { load_checkpoint(p); }), p,
                 {"'1.weight'", "[5, 6]", "expects [4, 6]"});
  }
  {
    const std::string p = edited("missing.safetensors",
                                 [](SafetensorsFile& f) { f.tensors.erase("3.bias"); });
    expect_error(error_from([&] { load_checkpoint(p); }), p, {"'3.bias'", "[3]", "missing"});
  }
  {
    const std::string p = edited("extra.safetensors", [](SafetensorsFile& f) {
      f.tensors["5.weight"] = {"F32", {2}, std::string(8, '\0')};
    });
    expect_error(error_from([&] { load_checkpoint(p); }), p, {"'5.weight'", "does not belong"});
  }
  {
    // The metadata and the tensors describe different widths of the same model.
    const std::string p = edited("wider.safetensors", [](SafetensorsFile& f) {
      f.metadata["config"] = R"({"input_features":6,"hidden":[8],"num_classes":3})";
    });
    expect_error(error_from([&] { load_checkpoint(p); }), p,
                 {"'1.weight'", "[4, 6]", "expects [8, 6]"});
  }
  {
    // MLP tensors under another model's name.
    const std::string p = edited("lenet.safetensors", [](SafetensorsFile& f) {
      f.metadata["model"] = "lenet5";
      f.metadata["config"] = "{}";
    });
    expect_error(error_from([&] { load_checkpoint(p); }), p, {"missing"});
  }
  {
    const std::string p = edited("unknown.safetensors",
                                 [](SafetensorsFile& f) { f.metadata["model"] = "resnet9000"; });
    expect_error(error_from([&] { load_checkpoint(p); }), p,
                 {"unknown model 'resnet9000'", "mlp"});
  }
  {
    const std::string p = edited("newline.safetensors",
                                 [](SafetensorsFile& f) { f.metadata["model"] = "ml\np"; });
    expect_error(error_from([&] { load_checkpoint(p); }), p, {"ml\\x0ap"});
  }
  {
    const std::string p = edited("badname.safetensors", [](SafetensorsFile& f) {
      f.tensors["1.weight\nx"] = {"F32", {1}, std::string(4, '\0')};
    });
    expect_error(error_from([&] { load_checkpoint(p); }), p,
                 {"1.weight\\x0ax", "control characters"});
  }
}

TEST_F(HostileCheckpoint, BrokenModelConfigs) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  struct Case {
    std::string config;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {"this is not JSON", {"not valid JSON"}},
      {"{\"hidden\": [4,", {"not valid JSON"}},
      {"[1, 2]", {"not a JSON object"}},
      {"null", {"not a JSON object"}},
      // Regression: a value of the wrong type escaped as a nlohmann exception.
      {R"({"input_features":6,"hidden":"wide","num_classes":3})",
       {"model 'mlp'", "type must be array, but is string"}},
      {R"({"input_features":6,"hidden":[4],"num_classes":"three"})", {"model 'mlp'"}},
      {R"({"input_features":6,"hidden":[-4],"num_classes":3})", {"model 'mlp'"}},
      {R"({"input_features":6,"hidden":[4],"num_classes":3,"td":{"mode":"sideways"}})",
       {"model 'mlp'", "sideways"}},
      // Settings out of range are refused as the config's, before any layer is configured.
      {R"({"input_features":6,"hidden":[4],"num_classes":3,"td":{"mode":"weight","gamma":1.5}})",
       {"model config", "gamma 1.5 is outside [0, 1]"}},
      {R"({"input_features":6,"hidden":[4],"num_classes":3,
           "td":{"mode":"weight","gamma":1,"alpha":1,"rescale":true}})",
       {"model config", "a rescaled dropout rate must be below 1"}},
      // Regression: deep nesting inside the config overflowed the stack in an error message.
      {R"({"input_features":6,"hidden":[4],"num_classes":3,"td":)" + deep + "}",
       {"nests deeper than 16"}},
      {deep_objects(100000), {"model config", "nests deeper than 16"}},
  };
  std::vector<Case> all = cases;
  // A width that cannot be allocated is an error, not a crash. (AddressSanitizer aborts on such a
  // request unless allocator_may_return_null=1, which ctest sets for the sanitizer build.)
  const char* asan = std::getenv("ASAN_OPTIONS");
  if (!kAddressSanitizer || (asan && std::strstr(asan, "allocator_may_return_null=1")))
    all.push_back({R"({"input_features":6,"hidden":[1099511627776],"num_classes":3})",
                   {"model 'mlp'", "out of host memory"}});
  for (const Case& c : all) {
    SCOPED_TRACE(c.config.substr(0, 100));
    const std::string p = edited("config.safetensors",
                                 [&](SafetensorsFile& f) { f.metadata["config"] = c.config; });
    expect_error(error_from([&] { load_checkpoint(p); }), p, c.needles);
  }
}

// Regression: a NaN weight was loaded, and `tdrop eval` printed an accuracy and exited 0.
// A checkpoint meets a dataset it was not trained on (a CIFAR-10 model on Fashion-MNIST): an
// error naming both, not the first layer's shape error.
TEST(CheckpointFits, OtherInputsOrClassesNameTheCheckpointAndDataset) {
  Checkpoint ck;
  ck.model_config = {{"input_shape", {3, 32, 32}}, {"num_classes", 10}};
  ImageDataset fashion;
  fashion.channels = 1;
  fashion.height = fashion.width = 32;
  try {
    check_checkpoint_fits(ck, "runs/cifar/model.safetensors", fashion, "fashion-mnist");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("runs/cifar/model.safetensors"), std::string::npos) << m;
    EXPECT_NE(m.find("fashion-mnist"), std::string::npos) << m;
    EXPECT_NE(m.find("[3, 32, 32]"), std::string::npos) << m;
  }
  ImageDataset cifar = fashion;
  cifar.channels = 3;
  EXPECT_NO_THROW(check_checkpoint_fits(ck, "c", cifar, "cifar10"));
  cifar.num_classes = 100;
  const std::optional<std::string> m =
      error_from([&] { check_checkpoint_fits(ck, "runs/c.safetensors", cifar, "cifar100"); });
  expect_error(m, "runs/c.safetensors", {"has 10 classes, but cifar100 has 100"});
}

TEST_F(HostileCheckpoint, NonFiniteWeights) {
  struct Case {
    std::string tensor;
    size_t index;
    float value;
    std::string at;
  };
  const float inf = std::numeric_limits<float>::infinity();
  for (const Case& c : {Case{"1.weight", 7, std::nanf(""), "[1, 1]"},
                        Case{"1.weight", 23, inf, "[3, 5]"}, Case{"3.bias", 0, -inf, "[0]"}}) {
    SCOPED_TRACE(c.tensor + " " + c.at);
    const std::string p = edited("nonfinite.safetensors", [&](SafetensorsFile& f) {
      std::memcpy(f.tensors.at(c.tensor).bytes.data() + 4 * c.index, &c.value, 4);
    });
    expect_error(error_from([&] { load_checkpoint(p); }), p,
                 {"tensor '" + c.tensor + "'", "non-finite", "at index " + c.at});
    EXPECT_NO_THROW(load_safetensors(p));  // the file is well formed; its weights are not
  }
}

// Resume metadata values are JSON from the file: nested deep, they are an error naming it.
TEST_F(HostileCheckpoint, DeeplyNestedResumeMetadata) {
  auto model = build_model("mlp", config_);
  SGD opt(model->parameters(), 0.1f);
  const std::string run = dir_.file("run");
  fs::create_directories(run);
  save_resume(run, *model, opt, ResumePoint{});
  ASSERT_NO_THROW(load_resume(run, *model, opt));
  const std::string path = resume_path(run);
  SafetensorsFile f = load_safetensors(path);
  for (const std::string& deep :
       {std::string(200000, '[') + std::string(200000, ']'), deep_objects(200000)}) {
    f.metadata["loss_sum"] = deep;
    write_bytes(path, encode_safetensors(f));
    expect_error(error_from([&] { load_resume(run, *model, opt); }), path,
                 {"resume metadata 'loss_sum'", "nests deeper than 64"});
  }
}

// The parser every JSON file goes through (run config.json too): nesting is counted outside
// strings only, the limit is inclusive, and each error names what was parsed.
TEST(HostileJson, ParseJsonBounded) {
  const std::string what = "run/config.json";
  auto nested = [](size_t n) { return std::string(n, '[') + std::string(n, ']'); };
  EXPECT_NO_THROW(parse_json_bounded(nested(kMaxJsonDepth), what));
  expect_error(error_from([&] { parse_json_bounded(nested(kMaxJsonDepth + 1), what); }), what,
               {"nests deeper than 64 levels"});
  for (const std::string& deep : {nested(200000), deep_objects(200000)})
    expect_error(error_from([&] { parse_json_bounded(deep, what); }), what,
                 {"nests deeper than 64 levels"});
  const std::string text = R"({"a\"[{":"\\[[","b":[1]})";
  EXPECT_EQ(json_nesting_depth(text), 2u);
  EXPECT_EQ(parse_json_bounded(text, what), json({{"a\"[{", "\\[["}, {"b", {1}}}));
  // A stray closing bracket does not lower the count below zero: the nesting after it is still
  // seen (the text is invalid either way, but deep nesting must be refused before parsing).
  EXPECT_EQ(json_nesting_depth("]}[[[1]]]"), 3u);
  expect_error(error_from([&] { parse_json_bounded("]" + nested(kMaxJsonDepth + 1), what); }),
               what, {"nests deeper than 64 levels"});
  expect_error(error_from([&] { parse_json_bounded("{\"a\":", what); }), what,
               {"is not valid JSON"});
}

// ---------------------------------------------------------------------------------------------
// IDX and Fashion-MNIST

std::string idx_file(const std::vector<uint32_t>& dims, const std::string& payload,
                     uint8_t dtype = 0x08) {
  std::string b = {0, 0, static_cast<char>(dtype), static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b += static_cast<char>((d >> s) & 0xFF);
  return b + payload;
}

std::string gzip(const std::string& plain) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, plain.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(plain.data()));
  z.avail_in = static_cast<uInt>(plain.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

class HostileIdx : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 60; ++i) payload_ += static_cast<char>(i * 37 % 251);
    plain_ = idx_file({3, 4, 5}, payload_);
    gz_ = gzip(plain_);
    path_ = dir_.file("images-idx3-ubyte.gz");
  }
  std::vector<uint8_t> payload_bytes() const { return {payload_.begin(), payload_.end()}; }

  TempDir dir_;
  std::string payload_, plain_, gz_, path_;
};

TEST_F(HostileIdx, TheGoodFilesLoad) {
  for (const std::string* f : {&plain_, &gz_}) {
    write_bytes(path_, *f);
    const IdxArray a = read_idx(path_);
    EXPECT_EQ(a.dims, (std::vector<int64_t>{3, 4, 5}));
    EXPECT_EQ(a.data, payload_bytes());
  }
}

// Regression (gzip): a stream cut inside its last deflate block or its CRC/length trailer was
// accepted, its checksum never verified.
TEST_F(HostileIdx, EveryTruncationIsAnError) {
  for (const std::string* f : {&plain_, &gz_}) {
    for (size_t len = 0; len < f->size(); ++len) {
      SCOPED_TRACE((f == &gz_ ? "gzip, length " : "plain, length ") + std::to_string(len));
      write_bytes(path_, std::string_view(*f).substr(0, len));
      expect_error(error_from([&] { read_idx(path_); }), path_);
    }
  }
}

// Plain: a flip in the 16 header bytes is always an error (magic, dtype, rank, or dims that no
// longer match the payload); a flip in the payload changes exactly that byte.
TEST_F(HostileIdx, EverySingleBitFlipPlain) {
  for (size_t byte = 0; byte < plain_.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      SCOPED_TRACE("byte " + std::to_string(byte) + " bit " + std::to_string(bit));
      write_bytes(path_, flip(plain_, byte, bit));
      std::optional<IdxArray> a;
      const auto err = error_from([&] { a = read_idx(path_); });
      if (byte < 16) {
        expect_error(err, path_);
        continue;
      }
      ASSERT_FALSE(err.has_value()) << *err;
      std::vector<uint8_t> want = payload_bytes();
      want[byte - 16] ^= static_cast<uint8_t>(1 << bit);
      EXPECT_EQ(a->dims, (std::vector<int64_t>{3, 4, 5}));
      EXPECT_EQ(a->data, want);
    }
  }
}

// Gzip: the CRC catches payload damage, so a flip is an error or (in header fields zlib does not
// check, such as the timestamp) gives back exactly the original content.
TEST_F(HostileIdx, EverySingleBitFlipGzip) {
  size_t rejected = 0;
  for (size_t byte = 0; byte < gz_.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      SCOPED_TRACE("byte " + std::to_string(byte) + " bit " + std::to_string(bit));
      write_bytes(path_, flip(gz_, byte, bit));
      std::optional<IdxArray> a;
      const auto err = error_from([&] { a = read_idx(path_); });
      if (err) {
        expect_error(err, path_);
        ++rejected;
        continue;
      }
      EXPECT_EQ(a->dims, (std::vector<int64_t>{3, 4, 5}));
      EXPECT_EQ(a->data, payload_bytes());
    }
  }
  // Everything from the deflate data on (byte 10 onward) is checked, except the unused bits of
  // the last deflate byte.
  EXPECT_GT(rejected, 8 * (gz_.size() - 11));
}

TEST_F(HostileIdx, OversizedHeaderFields) {
  struct Case {
    std::string bytes, why;
  };
  const std::vector<Case> cases = {
      {idx_file({0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}, "abc"), "exceed the limit"},
      {idx_file({0xFFFFFFFFu}, "abc"), "exceed the limit"},
      // Exactly at the limit (2^31 bytes) but only 3 present: read in chunks, so this fails on
      // the bytes that are there without first allocating 2 GiB.
      {idx_file({1u << 31}, "abc"), "truncated: expected 2147483648 bytes of data, got 3"},
      {std::string{0, 0, 0x08, static_cast<char>(0xFF)} + "abcd", "ndim 255 out of range"},
      {std::string{0, 0, 0x08, 4} + "abcd", "truncated IDX header"},
      {idx_file({2}, "ab", 0x0D), "unsupported IDX dtype 0x0D"},
  };
  for (const Case& c : cases) {
    for (bool compress : {false, true}) {
      SCOPED_TRACE(c.why + (compress ? " (gzip)" : " (plain)"));
      write_bytes(path_, compress ? gzip(c.bytes) : c.bytes);
      expect_error(error_from([&] { read_idx(path_); }), path_, {c.why});
    }
  }
}

TEST_F(HostileIdx, FashionMnistPairs) {
  const std::string images = dir_.file("t10k-images-idx3-ubyte.gz");
  const std::string labels = dir_.file("t10k-labels-idx1-ubyte.gz");
  const std::string good_images = gzip(idx_file({3, 4, 5}, payload_));
  const std::string good_labels = gzip(idx_file({3}, std::string{7, 0, 9}));
  write_bytes(images, good_images);
  write_bytes(labels, good_labels);
  const ImageDataset ds = load_fashion_mnist(dir_.path(), "test");
  EXPECT_EQ(ds.count, 3);
  EXPECT_EQ(ds.height, 4);
  EXPECT_EQ(ds.width, 5);
  EXPECT_EQ(ds.labels, (std::vector<int64_t>{7, 0, 9}));
  EXPECT_EQ(ds.images, payload_bytes());

  const std::string plain_labels = idx_file({3}, std::string{7, 0, 9});
  for (size_t len = 0; len < plain_labels.size(); ++len) {
    write_bytes(labels, plain_labels.substr(0, len));
    expect_error(error_from([&] { load_fashion_mnist(dir_.path(), "test"); }), labels);
  }
  // Label bytes: a flip gives another label in [0, 9], or one out of range that is an error.
  for (size_t byte = 8; byte < plain_labels.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      const std::string f = flip(plain_labels, byte, bit);
      write_bytes(labels, f);
      std::optional<ImageDataset> d;
      const auto err = error_from([&] { d = load_fashion_mnist(dir_.path(), "test"); });
      const int label = static_cast<uint8_t>(f[byte]);
      if (label > 9) {
        expect_error(err, labels, {"label " + std::to_string(label), "out of range"});
      } else {
        ASSERT_FALSE(err.has_value()) << *err;
        EXPECT_EQ(d->labels[byte - 8], label);
      }
    }
  }
  write_bytes(labels, idx_file({4}, std::string{1, 2, 3, 4}));
  expect_error(error_from([&] { load_fashion_mnist(dir_.path(), "test"); }), labels,
               {"3 images", "4 labels"});
  write_bytes(labels, idx_file({3, 1}, std::string{1, 2, 3}));
  expect_error(error_from([&] { load_fashion_mnist(dir_.path(), "test"); }), labels,
               {"expected 1-d labels"});
  write_bytes(labels, good_labels);
  write_bytes(images, idx_file({3, 20}, payload_));
  expect_error(error_from([&] { load_fashion_mnist(dir_.path(), "test"); }), images,
               {"expected 3-d images"});
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10

std::string cifar_records(int n) {
  std::string b;
  for (int r = 0; r < n; ++r) {
    b += static_cast<char>((3 * r + 2) % 10);
    for (int i = 0; i < 3072; ++i) b += static_cast<char>((r * 31 + i * 7) & 0xFF);
  }
  return b;
}

// `ds` holds exactly the records of `bytes`.
void expect_dataset(const ImageDataset& ds, const std::string& bytes) {
  const size_t rec = static_cast<size_t>(kCifar10RecordBytes);
  ASSERT_EQ(bytes.size() % rec, 0u);
  const size_t n = bytes.size() / rec;
  EXPECT_EQ(ds.count, static_cast<int64_t>(n));
  EXPECT_EQ(ds.channels, 3);
  EXPECT_EQ(ds.height, 32);
  EXPECT_EQ(ds.width, 32);
  ASSERT_EQ(ds.labels.size(), n);
  ASSERT_EQ(ds.images.size(), n * (rec - 1));
  for (size_t r = 0; r < n; ++r) {
    EXPECT_EQ(ds.labels[r], static_cast<uint8_t>(bytes[r * rec])) << "record " << r;
    EXPECT_EQ(0, std::memcmp(ds.images.data() + r * (rec - 1), bytes.data() + r * rec + 1, rec - 1))
        << "record " << r;
  }
}

TEST(HostileCifar10, Truncations) {
  TempDir dir;
  const std::string path = dir.file("test_batch.bin");
  const std::string good = cifar_records(2);
  const auto rec = static_cast<size_t>(kCifar10RecordBytes);
  // Every length near the ends and the record boundary, and every 13th in between.
  auto near = [](size_t a, size_t b) { return (a > b ? a - b : b - a) < 80; };
  for (size_t len = 0; len < good.size(); ++len) {
    if (!(near(len, 0) || near(len, rec) || near(len, good.size()) || len % 13 == 0)) continue;
    SCOPED_TRACE("length " + std::to_string(len));
    write_bytes(path, std::string_view(good).substr(0, len));
    ImageDataset ds;
    const auto err = error_from([&] { read_cifar10_file(path, ds); });
    if (len == rec) {  // one whole record: a valid, shorter file
      ASSERT_FALSE(err.has_value()) << *err;
      expect_dataset(ds, good.substr(0, rec));
    } else {
      expect_error(err, path, {std::to_string(len) + " bytes"});
    }
  }
}

TEST(HostileCifar10, EverySingleBitFlipInLabelsAndSampledPixels) {
  TempDir dir;
  const std::string path = dir.file("test_batch.bin");
  const std::string good = cifar_records(2);
  const auto rec = static_cast<size_t>(kCifar10RecordBytes);
  size_t checked = 0;
  for (size_t byte = 0; byte < good.size(); ++byte) {
    const bool label = byte % rec == 0;
    if (!label && byte % 41 != 1) continue;
    for (int bit = 0; bit < 8; ++bit) {
      SCOPED_TRACE("byte " + std::to_string(byte) + " bit " + std::to_string(bit));
      const std::string f = flip(good, byte, bit);
      write_bytes(path, f);
      ImageDataset ds;
      const auto err = error_from([&] { read_cifar10_file(path, ds); });
      const int value = static_cast<uint8_t>(f[byte]);
      if (label && value > 9) {
        expect_error(err, path,
                     {"record " + std::to_string(byte / rec), "label " + std::to_string(value)});
      } else {
        ASSERT_FALSE(err.has_value()) << *err;
        expect_dataset(ds, f);
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 8u * (2 + (good.size() + 39) / 41));
}

TEST(HostileCifar10, OversizedAndMisplacedFiles) {
  TempDir dir;
  const std::string path = dir.file("test_batch.bin");
  const std::string good = cifar_records(1);
  for (const std::string& bytes : {good + "x", good + good.substr(0, 3072), std::string(1, '\0')}) {
    write_bytes(path, bytes);
    ImageDataset ds;
    expect_error(error_from([&] { read_cifar10_file(path, ds); }), path,
                 {std::to_string(bytes.size()) + " bytes", "not a positive multiple"});
  }
  // Appending 3x32x32 records to a dataset of another geometry.
  write_bytes(path, good);
  ImageDataset gray;
  gray.count = 1, gray.channels = 1, gray.height = 28, gray.width = 28;
  expect_error(error_from([&] { read_cifar10_file(path, gray); }), path, {"1x28x28"});
  // The loader names the bad batch among several.
  for (int i = 1; i <= 5; ++i) write_bytes(dir.file("data_batch_" + std::to_string(i) + ".bin"), good);
  const std::string bad = dir.file("data_batch_4.bin");
  write_bytes(bad, good.substr(0, 100));
  expect_error(error_from([&] { load_cifar10(dir.path(), "train"); }), bad, {"100 bytes"});
  fs::remove(bad);
  fs::create_directory(bad);
  expect_error(error_from([&] { load_cifar10(dir.path(), "train"); }), bad);
}

// ---------------------------------------------------------------------------------------------
// The real binary

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

TEST_F(HostileCheckpoint, EvalOnCorruptCheckpointsExitsWithOneErrorLine) {
  const char* bin_dir = std::getenv("TDROP_TEST_BINARY_DIR");
  if (!bin_dir || !*bin_dir)
    GTEST_SKIP() << "TDROP_TEST_BINARY_DIR is not set (ctest sets it to the build directory)";
  const std::string binary = (fs::path(bin_dir) / "tdrop").string();
  if (!fs::exists(binary)) GTEST_SKIP() << binary << " does not exist; build the tdrop target";

  std::vector<std::pair<std::string, std::string>> files;  // (path, a word the error must hold)
  auto add = [&](const std::string& name, const std::string& bytes, const std::string& needle) {
    const std::string p = dir_.file(name);
    write_bytes(p, bytes);
    files.emplace_back(p, needle);
  };
  add("truncated.safetensors", good_.substr(0, good_.size() / 2), "header length");
  add("cut-data.safetensors", good_.substr(0, good_.size() - 1), "out of range");
  add("flipped.safetensors", flip(good_, 8, 1), "not valid JSON");  // '{' -> 'y'
  add("oversized.safetensors", u64_le(~uint64_t{0}) + good_.substr(8), "exceeds the file size");
  add("deep.safetensors",
      safetensors_bytes(std::string(500000, '[') + std::string(500000, ']')), "nests deeper");
  files.emplace_back(edited("shape.safetensors",
                            [](SafetensorsFile& f) {
                              f.tensors.at("3.bias") = {"F32", {4}, std::string(16, '\0')};
                            }),
                     "'3.bias'");
  files.emplace_back(edited("nan.safetensors",
                            [](SafetensorsFile& f) {
                              const float nan = std::nanf("");
                              std::memcpy(f.tensors.at("1.weight").bytes.data() + 12, &nan, 4);
                            }),
                     "'1.weight'");
  files.emplace_back(
      edited("config.safetensors",
             [](SafetensorsFile& f) { f.metadata["config"] = R"({"hidden":"wide"})"; }),
      "model 'mlp'");

  for (const auto& [path, needle] : files) {
    SCOPED_TRACE(path);
    const std::string err_path = dir_.file("stderr.txt");
    const std::string cmd = "exec timeout -s KILL 120 " + quote(binary) +
                            " eval --device cpu --checkpoint " + quote(path) + " 2>" +
                            quote(err_path) + " >/dev/null </dev/null";
    const int status = std::system(cmd.c_str());
    const std::string err = read_bytes(err_path);
    ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status) << "\n" << err;
    EXPECT_EQ(WEXITSTATUS(status), 1) << err;
    EXPECT_EQ(err.rfind("tdrop: error: ", 0), 0u) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << "one line: " << err;
    EXPECT_NE(err.find(path), std::string::npos) << err;
    EXPECT_NE(err.find(needle), std::string::npos) << "lacks \"" << needle << "\": " << err;
  }
}

}  // namespace
}  // namespace tdrop
