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
    int64_t features = 1;  // explicit, not -1: an empty batch cannot infer it
    for (int64_t d = 1; d < x.dim(); ++d) features *= x.size(d);
    return reshape(x, {x.size(0), features});
  }
  std::string type_name() const override { return "Flatten"; }
};

}  // namespace tdrop
