// libFuzzer target for the safetensors decoder. Any input must either decode or raise a one-line
// tdrop::Error naming the file; a decoded file must re-encode and decode to the same content.
// Any other exception, crash, leak or sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/safetensors.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

using tdrop::fuzz::bug;

void expect_same(const tdrop::SafetensorsFile& a, const tdrop::SafetensorsFile& b) {
  if (a.metadata != b.metadata) bug("metadata changed in a round trip");
  if (a.tensors.size() != b.tensors.size()) bug("tensor count changed in a round trip");
  for (const auto& [name, t] : a.tensors) {
    const auto it = b.tensors.find(name);
    if (it == b.tensors.end()) bug("tensor lost in a round trip: " + name);
    if (it->second.dtype != t.dtype || it->second.shape != t.shape || it->second.bytes != t.bytes)
      bug("tensor changed in a round trip: " + name);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const std::string name = "fuzz-input.safetensors";
  tdrop::SafetensorsFile f;
  try {
    f = tdrop::decode_safetensors(bytes, name);
  } catch (const tdrop::Error& e) {
    tdrop::fuzz::check_message(e, {name});
    return 0;
  }
  // Accepted: the content must be self-consistent, so encoding it cannot fail, and decoding the
  // encoding gives it back.
  for (const auto& [tname, t] : f.tensors) {
    uint64_t n = tdrop::safetensors_dtype_size(t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0) bug("negative dimension accepted");
      n *= static_cast<uint64_t>(d);
    }
    if (n != t.bytes.size()) bug("tensor bytes do not match dtype and shape: " + tname);
    if (t.bytes.size() > size) bug("tensor larger than the input: " + tname);
  }
  std::string again;
  try {
    again = tdrop::encode_safetensors(f);
  } catch (const tdrop::Error& e) {
    bug(std::string("a decoded file does not re-encode: ") + e.what());
  }
  try {
    expect_same(f, tdrop::decode_safetensors(again, "re-encoded"));
  } catch (const tdrop::Error& e) {
    bug(std::string("a re-encoded file does not decode: ") + e.what());
  }
  return 0;
}
