// Parameter-free shape and activation layers.
#pragma once
#include "kernels/ops.h"
#include "layers/module.h"

namespace tdrop {

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return relu(x); }
  std::string type_name() const override { return "ReLU"; }
};

// [N, d1, d2, ...] -> [N, d1*d2*...].
class Flatten : public Module {
 public:
  Tensor forward(const Tensor& x) override {
    TDROP_CHECK(x.dim() >= 1, "Flatten: input ", x.describe(), " has no batch dimension");
    return reshape(x, {x.size(0), -1});
  }
  std::string type_name() const override { return "Flatten"; }
};

}  // namespace tdrop
