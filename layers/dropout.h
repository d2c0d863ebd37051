// Standard dropout on activations: in training each value is zeroed with probability p and the
// rest are scaled by 1/(1-p); identity in eval. Draws come from Philox keyed by
// (seed, step, layer), so a run is reproducible and CPU/CUDA masks agree.
#pragma once
#include "core/philox.h"
#include "kernels/ops.h"
#include "layers/module.h"

namespace tdrop {

class Dropout : public Module {
 public:
  explicit Dropout(float p) : p_(p) {
    TDROP_CHECK(p >= 0.0f && p <= 1.0f, "Dropout: rate ", p, " is outside [0, 1]");
  }
  Tensor forward(const Tensor& x) override {
    if (!training() || p_ == 0.0f) return x;
    return dropout(x, p_, rng_seed_, kStreamDropout + rng_step_ * 4096 + rng_id_);
  }
  std::string type_name() const override { return "Dropout"; }
  std::string describe() const override { return "Dropout(p=" + std::to_string(p_) + ")"; }

 private:
  float p_;
};

}  // namespace tdrop
