// Between tdrop tensors and safetensors records: kept apart from the parser (safetensors.cpp),
// which the fuzzers build alone, without the tensor library.
#include <cstring>

#include "core/error.h"
#include "core/safetensors.h"

namespace tdrop {

RawTensor to_raw_tensor(const Tensor& t) {
  const Tensor c = t.to(Device::CPU).contiguous();
  RawTensor r;
  r.dtype = dtype_name(c.dtype());
  r.shape = c.shape();
  r.bytes.assign(static_cast<const char*>(c.raw_data()),
                 static_cast<size_t>(c.numel()) * dtype_size(c.dtype()));
  return r;
}

Tensor f32_tensor_from_raw(const RawTensor& r, const std::string& name, const std::string& source) {
  TDROP_CHECK(r.dtype == "F32", source, ": tensor '", printable(name), "' has dtype ",
              printable(r.dtype), "; tdrop files hold F32 tensors");
  Tensor t = Tensor::empty(r.shape, DType::F32, Device::CPU);
  TDROP_CHECK(r.bytes.size() == static_cast<size_t>(t.numel()) * 4, source, ": tensor '",
              printable(name), "' ", shape_str(r.shape), " holds ", r.bytes.size(),
              " bytes, not ", t.numel() * 4);
  if (!r.bytes.empty()) std::memcpy(t.raw_data(), r.bytes.data(), r.bytes.size());
  return t;
}

}  // namespace tdrop
