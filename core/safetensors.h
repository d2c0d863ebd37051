// Reader/writer for the safetensors format: an 8-byte little-endian header length N, N bytes
// of JSON describing each tensor (dtype, shape, data_offsets relative to the data buffer) plus
// an optional "__metadata__" object of strings, then the raw data buffer.
// Decoding treats the file as untrusted: every size and offset is checked before it is used,
// and any problem is reported as a one-line tdrop::Error naming the file and the tensor.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace tdrop {

struct RawTensor {
  std::string dtype;           // "F32", "F64", "I64", "U8", "I32", "F16", "BF16"
  std::vector<int64_t> shape;  // [] is a scalar
  std::string bytes;           // row-major, little-endian; size == numel * dtype size
};

struct SafetensorsFile {
  std::map<std::string, RawTensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Deterministic: tensors are laid out in name order and the header is padded with spaces so
// the data buffer starts at an 8-byte aligned offset.
std::string encode_safetensors(const SafetensorsFile& f);
// Atomic (temp file + fsync + rename): a crash leaves the old file or the new one.
void save_safetensors(const std::string& path, const SafetensorsFile& f);

// name_for_errors is only used in messages (usually the path).
SafetensorsFile decode_safetensors(std::string_view bytes, const std::string& name_for_errors);
SafetensorsFile load_safetensors(const std::string& path);

// A tensor's bytes as a file tensor (copied to the host, made contiguous).
RawTensor to_raw_tensor(const Tensor& t);
// A file tensor as a CPU float32 tensor; anything else is an error naming `source` and `name`.
Tensor f32_tensor_from_raw(const RawTensor& r, const std::string& name, const std::string& source);

// Text from a file made safe for a one-line error: control bytes escaped as \xNN, at most 200
// characters kept.
std::string printable(std::string_view s);

// Bytes per element; throws tdrop::Error for an unknown dtype.
size_t safetensors_dtype_size(const std::string& dtype);

}  // namespace tdrop
