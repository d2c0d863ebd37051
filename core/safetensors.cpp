#include "core/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/json_parse.h"

namespace tdrop {
namespace {

using json = nlohmann::json;

// Bounds what a hostile header length can make us allocate and parse.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
// A valid header nests three levels deep (header, tensor entry, shape); this bound stops a
// header such as [[[[...]]]] before it is built, since printing or walking such a value
// recursively would overflow the stack.
constexpr size_t kMaxHeaderDepth = 16;
constexpr const char* kMetadataKey = "__metadata__";


// Product of the dims times the element size, or an error reason when a dim is negative or
// the product does not fit in 64 bits. A zero dim makes the product 0, but the other dims must
// still multiply to a size that fits, or the strides of such a tensor would overflow.
std::string byte_count(const std::vector<int64_t>& shape, uint64_t elem_size, uint64_t& out) {
  uint64_t n = elem_size, span = elem_size;
  for (int64_t d : shape) {
    if (d < 0) return "negative dimension in shape " + shape_str(shape);
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n) ||
        __builtin_mul_overflow(span, static_cast<uint64_t>(std::max<int64_t>(d, 1)), &span) ||
        span > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return "element count overflow for shape " + shape_str(shape);
  }
  out = n;
  return "";
}

void put_u64_le(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

uint64_t get_u64_le(std::string_view b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[i]);
  return v;
}

// Records the first key that repeats within an object, at any depth. A SAX pass: linear in the
// header, and it builds nothing.
class DuplicateKeyFinder : public nlohmann::json_sax<json> {
 public:
  std::string dup, dup_owner;  // the key, and the top-level entry it is in ("" at the top)

  bool start_object(size_t) override {
    open_.emplace_back();
    return true;
  }
  bool end_object() override {
    open_.pop_back();
    return true;
  }
  bool key(string_t& k) override {
    if (open_.size() == 1) top_key_ = k;
    if (!open_.back().insert(k).second && dup.empty()) {
      dup = k;
      dup_owner = open_.size() == 1 ? "" : top_key_;
    }
    return dup.empty();  // stop at the first
  }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_array(size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;  // not reached: the text has already parsed
  }

 private:
  std::vector<std::set<std::string>> open_;  // keys seen so far, one set per open object
  std::string top_key_;
};

// Parses the header, rejecting duplicate keys at any depth: nlohmann would otherwise keep the
// last value silently, and two different readers of the same file could then disagree.
json parse_header(std::string_view text, const std::string& file) {
  json j = parse_json_bounded(text, "safetensors " + file + ": header", kMaxHeaderDepth);
  DuplicateKeyFinder finder;
  json::sax_parse(text.begin(), text.end(), &finder);
  if (!finder.dup.empty()) {
    if (finder.dup_owner.empty())
      fail("safetensors ", file, ": duplicate tensor name \"", printable(finder.dup), "\"");
    fail("safetensors ", file, ": entry \"", printable(finder.dup_owner), "\": duplicate key \"",
         printable(finder.dup), "\"");
  }
  TDROP_CHECK(j.is_object(), "safetensors ", file, ": header is not a JSON object");
  return j;
}

// A JSON integer that is >= 0 and fits in int64 (nlohmann stores non-negative ints unsigned).
bool as_int64(const json& v, int64_t& out) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    out = static_cast<int64_t>(u);
    return true;
  }
  if (v.is_number_integer()) {
    out = v.get<int64_t>();
    return true;
  }
  return false;
}

// Bytes per element, or 0 for an unknown dtype (callers add their own context).
size_t dtype_size_or_0(const std::string& dtype) {
  static const std::map<std::string, size_t> sizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"U8", 1}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

constexpr const char* kKnownDtypes = "F64, F32, F16, BF16, I64, I32, U8";

}  // namespace

size_t safetensors_dtype_size(const std::string& dtype) {
  const size_t n = dtype_size_or_0(dtype);
  TDROP_CHECK(n > 0, "safetensors: unknown dtype \"", printable(dtype), "\" (known: ", kKnownDtypes,
              ")");
  return n;
}

std::string encode_safetensors(const SafetensorsFile& f) {
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : f.tensors) {  // std::map: name order, so output is deterministic
    const std::string where = "encode_safetensors: tensor \"" + printable(name) + "\": ";
    TDROP_CHECK(!name.empty(), "encode_safetensors: empty tensor name");
    TDROP_CHECK(name != kMetadataKey, where, "name is reserved for metadata");
    const size_t elem = dtype_size_or_0(t.dtype);
    TDROP_CHECK(elem > 0, where, "unknown dtype \"", printable(t.dtype),
                "\" (known: ", kKnownDtypes, ")");
    uint64_t nbytes = 0;
    const std::string why = byte_count(t.shape, elem, nbytes);
    TDROP_CHECK(why.empty(), where, why);
    TDROP_CHECK(t.bytes.size() == nbytes, where, "has ", t.bytes.size(), " bytes but ", t.dtype,
                " ", shape_str(t.shape), " needs ", nbytes);
    header[name] = {{"dtype", t.dtype},
                    {"shape", t.shape},
                    {"data_offsets", json::array({offset, offset + nbytes})}};
    offset += nbytes;
  }
  if (!f.metadata.empty()) header[kMetadataKey] = f.metadata;

  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {  // e.g. a name or value that is not valid UTF-8
    fail("encode_safetensors: cannot write header: ", printable(e.what()));
  }
  // Pad so the data buffer starts 8-byte aligned (8 + N is a multiple of 8).
  text.append((8 - text.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + text.size() + offset);
  put_u64_le(out, text.size());
  out += text;
  for (const auto& [name, t] : f.tensors) out += t.bytes;
  return out;
}

void save_safetensors(const std::string& path, const SafetensorsFile& f) {
  write_file_atomic(path, encode_safetensors(f));
}

SafetensorsFile decode_safetensors(std::string_view bytes, const std::string& file) {
  TDROP_CHECK(bytes.size() >= 8, "safetensors ", file, ": file is truncated (", bytes.size(),
              " bytes, need at least 8 for the header length)");
  const uint64_t n = get_u64_le(bytes);
  // Checked before anything is allocated or parsed.
  TDROP_CHECK(n <= bytes.size() - 8, "safetensors ", file, ": header length ", n,
              " exceeds the file size (", bytes.size(), " bytes)");
  TDROP_CHECK(n <= kMaxHeaderBytes, "safetensors ", file, ": header length ", n,
              " exceeds the limit of ", kMaxHeaderBytes, " bytes");
  const json header = parse_header(bytes.substr(8, n), file);
  const std::string_view data = bytes.substr(8 + n);

  SafetensorsFile out;
  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == kMetadataKey) {
      TDROP_CHECK(v.is_object(), "safetensors ", file, ": __metadata__ is not a JSON object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        TDROP_CHECK(m.value().is_string(), "safetensors ", file, ": __metadata__ value \"",
                    printable(m.key()), "\" is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "safetensors " + file + ": tensor \"" + printable(name) + "\": ";
    TDROP_CHECK(!name.empty(), "safetensors ", file, ": empty tensor name");
    TDROP_CHECK(v.is_object(), where, "entry is not a JSON object");
    for (const char* key : {"dtype", "shape", "data_offsets"})
      TDROP_CHECK(v.contains(key), where, "missing \"", key, "\"");
    const json& jd = v.at("dtype");
    const json& js = v.at("shape");
    const json& jo = v.at("data_offsets");
    TDROP_CHECK(jd.is_string(), where, "\"dtype\" is not a string");
    TDROP_CHECK(js.is_array(), where, "\"shape\" is not an array");
    TDROP_CHECK(jo.is_array() && jo.size() == 2, where, "\"data_offsets\" is not [begin, end]");

    RawTensor t;
    t.dtype = jd.get<std::string>();
    const size_t elem = dtype_size_or_0(t.dtype);
    TDROP_CHECK(elem > 0, where, "unknown dtype \"", printable(t.dtype),
                "\" (known: ", kKnownDtypes, ")");
    for (const json& d : js) {
      int64_t dim = 0;
      TDROP_CHECK(as_int64(d, dim), where, "shape entry ", printable(d.dump()),
                  " is not a 64-bit integer");
      t.shape.push_back(dim);
    }
    uint64_t nbytes = 0;
    const std::string why = byte_count(t.shape, elem, nbytes);
    TDROP_CHECK(why.empty(), where, why);

    int64_t begin = 0, end = 0;
    TDROP_CHECK(as_int64(jo[0], begin) && as_int64(jo[1], end) && begin >= 0 && begin <= end, where,
                "data_offsets ", printable(jo.dump()), " are not 0 <= begin <= end");
    const auto b = static_cast<uint64_t>(begin), e = static_cast<uint64_t>(end);
    TDROP_CHECK(e <= data.size(), where, "data_offsets [", b, ", ", e,
                "] out of range of the data buffer (", data.size(), " bytes)");
    TDROP_CHECK(e - b == nbytes, where, "size mismatch: data_offsets span ", e - b, " bytes but ",
                t.dtype, " ", shape_str(t.shape), " needs ", nbytes);
    t.bytes.assign(data.substr(b, e - b));
    spans.push_back({b, e, &name});
    out.tensors.emplace(name, std::move(t));
  }

  // Tensors must not share bytes, and (as the format requires) together they cover the data
  // buffer with no hole and nothing after it: sorted by (begin, end), each starts where the one
  // before it ended.
  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) {
    return std::tie(x.begin, x.end) < std::tie(y.begin, y.end);
  });
  uint64_t covered = 0;  // the end of the tensors so far
  const Span* prev = nullptr;
  for (const Span& c : spans) {
    TDROP_CHECK(c.begin >= covered, "safetensors ", file, ": tensor \"", printable(*c.name), "\" [",
                c.begin, ", ", c.end, ") overlaps tensor \"", printable(*prev->name), "\" [",
                prev->begin, ", ", prev->end, ")");
    TDROP_CHECK(c.begin == covered, "safetensors ", file, ": bytes [", covered, ", ", c.begin,
                ") of the data buffer belong to no tensor (before \"", printable(*c.name), "\")");
    covered = c.end;
    prev = &c;
  }
  TDROP_CHECK(covered == data.size(), "safetensors ", file, ": ", data.size() - covered,
              " bytes after the last tensor's data (the buffer holds ", data.size(),
              ", the tensors ", covered, ")");
  return out;
}

SafetensorsFile load_safetensors(const std::string& path) {
  return decode_safetensors(read_file(path), path);
}

std::string printable(std::string_view s) {
  constexpr size_t kMax = 200;
  std::string out;
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMax) out += "...";
  return out;
}

}  // namespace tdrop
