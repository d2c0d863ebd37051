// Weight initialisers drawn from Philox (so they are identical on every device and run).
#pragma once
#include <string>

#include "core/tensor.h"

namespace tdrop {

enum class InitScheme {
  TorchDefault,    // U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's Linear/Conv default
  KaimingUniform,  // U(-sqrt(6/fan_in), sqrt(6/fan_in)): He et al. for ReLU networks
  GlorotUniform,   // U(-sqrt(6/(fan_in+fan_out)), ...): Glorot & Bengio
};
InitScheme parse_init(const std::string& s);
const char* init_name(InitScheme s);

// Fills a CPU float tensor with U(-bound, bound) from Philox stream `stream` under `seed`.
void fill_uniform(Tensor& t, float bound, uint64_t seed, uint64_t stream);
float init_bound(InitScheme s, int64_t fan_in, int64_t fan_out);

}  // namespace tdrop
