#include "layers/init.h"

#include <cmath>

#include "core/philox.h"

namespace tdrop {

InitScheme parse_init(const std::string& s) {
  if (s == "torch") return InitScheme::TorchDefault;
  if (s == "kaiming") return InitScheme::KaimingUniform;
  if (s == "glorot") return InitScheme::GlorotUniform;
  fail("unknown init scheme '", s, "': expected torch, kaiming or glorot");
}

const char* init_name(InitScheme s) {
  switch (s) {
    case InitScheme::TorchDefault: return "torch";
    case InitScheme::KaimingUniform: return "kaiming";
    case InitScheme::GlorotUniform: return "glorot";
  }
  return "?";
}

float init_bound(InitScheme s, int64_t fan_in, int64_t fan_out) {
  const double fi = static_cast<double>(std::max<int64_t>(fan_in, 1));
  switch (s) {
    case InitScheme::TorchDefault: return static_cast<float>(1.0 / std::sqrt(fi));
    case InitScheme::KaimingUniform: return static_cast<float>(std::sqrt(6.0 / fi));
    case InitScheme::GlorotUniform:
      return static_cast<float>(std::sqrt(6.0 / (fi + static_cast<double>(fan_out))));
  }
  return 0.0f;
}

void fill_uniform(Tensor& t, float bound, uint64_t seed, uint64_t stream) {
  Tensor host = Tensor::empty(t.shape(), DType::F32, Device::CPU);
  float* p = host.data<float>();
  for (int64_t i = 0; i < host.numel(); ++i)
    p[i] = (2.0f * philox_uniform(seed, stream, static_cast<uint64_t>(i)) - 1.0f) * bound;
  t.copy_(host);
}

}  // namespace tdrop
