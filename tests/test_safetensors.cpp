#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "tests/expect_error.h"
#include "tests/temp_dir.h"

namespace tdrop {
namespace {

using json = nlohmann::json;
using testing::expect_error;

std::string random_bytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

RawTensor random_tensor(std::mt19937_64& rng, const std::string& dtype,
                        std::vector<int64_t> shape) {
  size_t numel = 1;
  for (int64_t d : shape) numel *= static_cast<size_t>(d);
  return {dtype, shape, random_bytes(rng, numel * safetensors_dtype_size(dtype))};
}

// Several dtypes, odd shapes, a 0-d scalar, empty tensors and metadata.
SafetensorsFile sample_file(std::mt19937_64& rng) {
  SafetensorsFile f;
  f.tensors["a"] = random_tensor(rng, "F32", {2, 3});
  f.tensors["b.weight"] = random_tensor(rng, "F64", {7});
  f.tensors["c"] = random_tensor(rng, "I64", {1, 1, 3});
  f.tensors["d"] = random_tensor(rng, "U8", {5, 1, 3, 1});
  f.tensors["scalar"] = random_tensor(rng, "I32", {});
  f.tensors["empty"] = random_tensor(rng, "F16", {0, 5});
  f.tensors["half"] = random_tensor(rng, "BF16", {3, 11});
  f.metadata["format"] = "pt";
  f.metadata["note"] = "spaces, \"quotes\" and unicode \xc3\xa9";
  return f;
}

void expect_same(const SafetensorsFile& a, const SafetensorsFile& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [name, t] : a.tensors) {
    SCOPED_TRACE(name);
    auto it = b.tensors.find(name);
    ASSERT_NE(it, b.tensors.end());
    EXPECT_EQ(t.dtype, it->second.dtype);
    EXPECT_EQ(t.shape, it->second.shape);
    EXPECT_EQ(t.bytes, it->second.bytes);
  }
  EXPECT_EQ(a.metadata, b.metadata);
}

std::mt19937_64 seeded_rng() {
  const auto seed = std::random_device{}();
  std::cout << "[ seed     ] " << seed << "\n";  // printed so a failure can be replayed
  return std::mt19937_64(seed);
}

// A file with the given header text (unpadded) and data buffer.
std::string make_file(const std::string& header, const std::string& data = "") {
  std::string out;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out += static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + data;
}

// Decoding must fail with a tdrop::Error whose one-line message names the file and the reason.
void expect_decode_error(std::string_view bytes, const std::string& reason) {
  try {
    decode_safetensors(bytes, "hostile.safetensors");
    ADD_FAILURE() << "decode succeeded, expected an error mentioning: " << reason;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("hostile.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find(reason), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

void expect_encode_error(const SafetensorsFile& f, const std::string& reason) {
  try {
    encode_safetensors(f);
    ADD_FAILURE() << "encode succeeded, expected an error mentioning: " << reason;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
  }
}

uint64_t header_len(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  return n;
}

TEST(Safetensors, RoundTrip) {
  auto rng = seeded_rng();
  const SafetensorsFile f = sample_file(rng);
  const std::string bytes = encode_safetensors(f);
  EXPECT_EQ((8 + header_len(bytes)) % 8, 0u) << "data buffer must start 8-byte aligned";
  const SafetensorsFile g = decode_safetensors(bytes, "roundtrip");
  expect_same(f, g);
  EXPECT_EQ(encode_safetensors(g), bytes) << "encoding must be deterministic";
  EXPECT_EQ(g.tensors.at("scalar").shape, std::vector<int64_t>{});
  EXPECT_EQ(g.tensors.at("scalar").bytes.size(), 4u);
  EXPECT_EQ(g.tensors.at("empty").shape, (std::vector<int64_t>{0, 5}));
  EXPECT_TRUE(g.tensors.at("empty").bytes.empty());
}

TEST(Safetensors, EmptyFileRoundTrips) {
  const std::string bytes = encode_safetensors({});
  EXPECT_EQ(bytes.size() % 8, 0u);
  const SafetensorsFile g = decode_safetensors(bytes, "empty");
  EXPECT_TRUE(g.tensors.empty());
  EXPECT_TRUE(g.metadata.empty());
}

TEST(Safetensors, SaveLoadLeavesNoTempFile) {
  auto rng = seeded_rng();
  const SafetensorsFile f = sample_file(rng);
  namespace fs = std::filesystem;
  const fs::path dir = ::testing::TempDir();
  const std::string base = "tdrop_st_" + std::to_string(::getpid()) + "_" +
                           std::to_string(std::random_device{}()) + ".safetensors";
  const std::string path = (dir / base).string();
  save_safetensors(path, f);
  save_safetensors(path, f);  // overwriting an existing file works too
  expect_same(f, load_safetensors(path));
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    EXPECT_NE(name.rfind(base + ".tmp.", 0), 0u) << "leftover temp file " << name;
  }
  fs::remove(path);
}

// A write that fails part way (here: a file size limit, EFBIG, as a full disk gives ENOSPC) is
// an error naming the temp file, which is removed; the file it was to replace is untouched.
TEST(AtomicFile, AFailedWriteKeepsTheOldFileAndLeavesNoTemporary) {
  testing::TempDir dir;
  const std::string path = dir.file("out.bin");
  write_file_atomic(path, "old contents");
  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &before), 0);
  rlimit small = before;
  small.rlim_cur = 4096;
  const auto handler = std::signal(SIGXFSZ, SIG_IGN);  // or the limit kills the process
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string error;
  try {
    write_file_atomic(path, std::string(100000, 'x'));
  } catch (const Error& e) {
    error = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &before);
  std::signal(SIGXFSZ, handler);
  EXPECT_NE(error.find("cannot write " + path + ".tmp."), std::string::npos) << error;
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"out.bin"});
  EXPECT_EQ(read_file(path), "old contents");
}

TEST(Safetensors, HeaderIsPlainJson) {
  auto rng = seeded_rng();
  const SafetensorsFile f = sample_file(rng);
  const std::string bytes = encode_safetensors(f);
  const uint64_t n = header_len(bytes);
  const json h = json::parse(bytes.substr(8, n));
  ASSERT_TRUE(h.is_object());
  EXPECT_EQ(h.size(), f.tensors.size() + 1);
  const uint64_t data_size = bytes.size() - 8 - n;
  for (const auto& [name, t] : f.tensors) {
    SCOPED_TRACE(name);
    const json& e = h.at(name);
    EXPECT_EQ(e.at("dtype").get<std::string>(), t.dtype);
    EXPECT_EQ(e.at("shape").get<std::vector<int64_t>>(), t.shape);
    const auto off = e.at("data_offsets").get<std::vector<uint64_t>>();
    ASSERT_EQ(off.size(), 2u);
    EXPECT_EQ(off[1] - off[0], t.bytes.size());
    ASSERT_LE(off[1], data_size);
    EXPECT_EQ(bytes.substr(8 + n + off[0], off[1] - off[0]), t.bytes);
  }
  using StringMap = std::map<std::string, std::string>;
  EXPECT_EQ(h.at("__metadata__").get<StringMap>(), f.metadata);
}

TEST(Safetensors, GoldenBytes) {
  SafetensorsFile f;
  const float v[2] = {1.0f, 2.0f};
  f.tensors["w"] = {"F32", {2}, std::string(reinterpret_cast<const char*>(v), sizeof v)};
  const std::string bytes = encode_safetensors(f);
  // 54 bytes of JSON padded with 2 spaces to 56, so the data starts at offset 64.
  const std::string header = R"({"w":{"data_offsets":[0,8],"dtype":"F32","shape":[2]}})"
                             "  ";
  ASSERT_EQ(header.size(), 56u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x38\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(bytes.substr(8, 56), header);
  EXPECT_EQ(bytes.substr(64), std::string("\x00\x00\x80\x3f\x00\x00\x00\x40", 8));
  EXPECT_EQ(bytes.size(), 72u);
}

TEST(Safetensors, DtypeSizes) {
  EXPECT_EQ(safetensors_dtype_size("F64"), 8u);
  EXPECT_EQ(safetensors_dtype_size("F32"), 4u);
  EXPECT_EQ(safetensors_dtype_size("F16"), 2u);
  EXPECT_EQ(safetensors_dtype_size("BF16"), 2u);
  EXPECT_EQ(safetensors_dtype_size("I64"), 8u);
  EXPECT_EQ(safetensors_dtype_size("I32"), 4u);
  EXPECT_EQ(safetensors_dtype_size("U8"), 1u);
  expect_error([] { safetensors_dtype_size("F8"); }, {"safetensors", "unknown dtype \"F8\""});
}

TEST(Safetensors, RejectsTruncatedAndBadLengths) {
  expect_decode_error("", "truncated");
  expect_decode_error(std::string("\x10\0\0", 3), "truncated");
  // Header length says 100 bytes but only 2 follow.
  std::string f = make_file("{}");
  f[0] = 100;
  expect_decode_error(f, "exceeds the file size");
  // 2^63: must be rejected from the length alone, before any allocation.
  std::string huge(8, '\0');
  huge[7] = '\x80';
  expect_decode_error(huge + "{}", "header length 9223372036854775808");
  // A header length within the file but above the 100 MB cap.
  const uint64_t big = (100ull << 20) + 8;
  std::string over = make_file(std::string(big, ' '));
  expect_decode_error(over, "exceeds the limit");
  // A valid file with its data buffer cut short.
  auto rng = seeded_rng();
  const std::string good = encode_safetensors(sample_file(rng));
  expect_decode_error(std::string_view(good).substr(0, good.size() - 1), "out of range");
}

TEST(Safetensors, RejectsBadJson) {
  expect_decode_error(make_file("{not json"), "not valid JSON");
  expect_decode_error(make_file("{\"a\": 1} trailing"), "not valid JSON");
  expect_decode_error(make_file("[1, 2]"), "not a JSON object");
  expect_decode_error(make_file("\"x\""), "not a JSON object");
  expect_decode_error(make_file("{\"a\": \"\xff\"}"), "not valid JSON");  // invalid UTF-8
}

TEST(Safetensors, RejectsBadEntries) {
  auto entry = [](const std::string& body, const std::string& data = std::string(8, '\0')) {
    return make_file("{\"t\": " + body + "}", data);
  };
  expect_decode_error(entry("[1]"), "entry is not a JSON object");
  expect_decode_error(entry(R"({"shape":[2],"data_offsets":[0,8]})"), "missing \"dtype\"");
  expect_decode_error(entry(R"({"dtype":"F32","data_offsets":[0,8]})"), "missing \"shape\"");
  expect_decode_error(entry(R"({"dtype":"F32","shape":[2]})"), "missing \"data_offsets\"");
  expect_decode_error(entry(R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})"), "\"dtype\" is not");
  expect_decode_error(entry(R"({"dtype":"F32","shape":2,"data_offsets":[0,8]})"),
                      "\"shape\" is not");
  expect_decode_error(entry(R"({"dtype":"F32","shape":[2.5],"data_offsets":[0,8]})"),
                      "is not a 64-bit integer");
  expect_decode_error(entry(R"({"dtype":"F32","shape":["2"],"data_offsets":[0,8]})"),
                      "is not a 64-bit integer");
  expect_decode_error(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})"),
                      "\"data_offsets\" is not");
  expect_decode_error(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,8]})"),
                      "\"data_offsets\" is not [begin, end]");
  expect_decode_error(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"),
                      "not 0 <= begin <= end");
  expect_decode_error(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[-1,7]})"),
                      "not 0 <= begin <= end");
  expect_decode_error(entry(R"({"dtype":"F8","shape":[2],"data_offsets":[0,8]})"), "unknown dtype");
  expect_decode_error(entry(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"),
                      "negative dimension");
  expect_decode_error(
      entry(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})"),
      "element count overflow");
  // Empty, but the other dims' strides would not fit in int64: 3 * 2^62 bytes fits in 64
  // unsigned bits, not in int64.
  expect_decode_error(
      entry(R"({"dtype":"U8","shape":[0,4611686018427387904,3],"data_offsets":[0,0]})", ""),
      "element count overflow");
  // 2^63 parses as an unsigned JSON integer, but fits no int64: it is no size or offset, not
  // a negative one.
  const std::string two_63 = "9223372036854775808";
  expect_decode_error(entry(R"({"dtype":"F32","shape":[)" + two_63 + R"(],"data_offsets":[0,8]})"),
                      "shape entry " + two_63 + " is not a 64-bit integer");
  expect_decode_error(entry(R"({"dtype":"U8","shape":[8],"data_offsets":[0,)" + two_63 + "]}"),
                      "data_offsets [0," + two_63 + "] are not 0 <= begin <= end");
  expect_decode_error(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,16]})"),
                      "out of range");
  expect_decode_error(entry(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"),
                      "size mismatch");
  expect_decode_error(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8],"dtype":"U8"})"),
                      "entry \"t\": duplicate key \"dtype\"");
  expect_decode_error(make_file(R"({"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})"),
                      "empty tensor name");
  // The tensor is named in the message; a newline in the name must not split the line.
  expect_decode_error(entry(R"({"dtype":"F8","shape":[2],"data_offsets":[0,8]})"), "tensor \"t\"");
  expect_decode_error(
      make_file("{\"a\\nb\":{\"dtype\":\"F8\",\"shape\":[],\"data_offsets\":[0,0]}}"),
      "tensor \"a\\x0ab\"");
}

TEST(Safetensors, RejectsOverlapAndDuplicates) {
  const std::string data(16, '\0');
  expect_decode_error(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                data),
                      "overlaps");
  expect_decode_error(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                data),
                      "overlaps");
  expect_decode_error(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                data),
                      "duplicate tensor name \"a\"");
  // Empty tensors take no bytes, so they may sit next to others at the same offset.
  const auto ok =
      decode_safetensors(make_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                                   R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                   data.substr(0, 8)),
                         "ok");
  EXPECT_EQ(ok.tensors.size(), 2u);
}

// The format leaves no byte of the data buffer unaccounted for: a hole between tensors or bytes
// after the last one could carry anything (and make a file two formats at once).
TEST(Safetensors, RejectsHolesAndTrailingBytes) {
  const std::string f32 = R"("dtype":"F32","shape":)";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"a\":{" + f32 + R"([2],"data_offsets":[0,8]}})", "8 bytes after the last tensor"},
      {"{\"a\":{" + f32 + R"([2],"data_offsets":[8,16]}})",
       "bytes [0, 8) of the data buffer belong to no tensor"},
      {"{\"a\":{" + f32 + R"([1],"data_offsets":[0,4]},"b":{)" + f32 +
           R"([2],"data_offsets":[8,16]}})",
       "bytes [4, 8)"},
  };
  for (const auto& [header, reason] : cases)
    expect_decode_error(make_file(header, std::string(16, '\0')), reason);
  expect_decode_error(make_file("{}", "x"), "1 bytes after the last tensor");
}

TEST(Safetensors, RejectsBadMetadata) {
  expect_decode_error(make_file(R"({"__metadata__":{"k":1}})"), "value \"k\" is not a string");
  expect_decode_error(make_file(R"({"__metadata__":["k"]})"), "__metadata__ is not");
  expect_decode_error(make_file(R"({"__metadata__":{"k":"a","k":"b"}})"), "duplicate key \"k\"");
  const auto ok = decode_safetensors(make_file(R"({"__metadata__":{"k":"v"}})"), "ok");
  EXPECT_EQ(ok.metadata.at("k"), "v");
}

TEST(Safetensors, EncodeRejectsInconsistentTensors) {
  SafetensorsFile f;
  f.tensors["w"] = {"F32", {2, 3}, std::string(20, '\0')};
  expect_encode_error(f, "needs 24");
  f.tensors["w"] = {"Q4", {2}, std::string(2, '\0')};
  expect_encode_error(f, "unknown dtype");
  f.tensors["w"] = {"F32", {-1}, ""};
  expect_encode_error(f, "negative dimension");
  f.tensors.clear();
  f.tensors[""] = {"U8", {1}, "x"};
  expect_encode_error(f, "empty tensor name");
  f.tensors.clear();
  f.tensors["__metadata__"] = {"U8", {1}, "x"};
  expect_encode_error(f, "reserved");
  f.tensors.clear();
  f.metadata["k"] = "\xff";
  expect_encode_error(f, "cannot write header");
}

// Corrupting any single header byte must give a clean tdrop::Error or a valid file, never
// another exception type or a crash.
TEST(Safetensors, HeaderBitFlipsFailCleanly) {
  auto rng = seeded_rng();
  const std::string good = encode_safetensors(sample_file(rng));
  const uint64_t end = 8 + header_len(good);
  for (uint64_t i = 0; i < end; ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0xFF);
    try {
      decode_safetensors(bad, "flipped");
    } catch (const Error&) {
    } catch (const std::exception& e) {
      ADD_FAILURE() << "byte " << i << ": unexpected exception " << e.what();
    }
  }
}

// Names from a file go into one-line messages: control bytes (DEL included) are escaped, and a
// long name is cut at 200 characters.
TEST(Safetensors, PrintableEscapesControlBytesAndCutsLongNames) {
  EXPECT_EQ(printable("a\nb\x7f"
                      "c\t"),
            "a\\x0ab\\x7fc\\x09");
  EXPECT_EQ(printable(std::string(200, 'x')), std::string(200, 'x'));
  EXPECT_EQ(printable(std::string(201, 'x')), std::string(200, 'x') + "...");
  EXPECT_EQ(printable("caf\xc3\xa9"), "caf\xc3\xa9");  // UTF-8 passes through
}

TEST(Safetensors, MissingFileNamesPath) {
  const std::string path = ::testing::TempDir() + "tdrop_no_such_file.safetensors";
  try {
    load_safetensors(path);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tdrop
