// Linear: y = x W^T + b with W [out, in] (one output unit's fan-in is one contiguous row, the
// layout targeted dropout ranks). With targeted dropout configured, forward uses the layer's
// effective weight W' (layers/targeted.h).
#pragma once
#include "layers/init.h"
#include "layers/module.h"
#include "layers/targeted.h"

namespace tdrop {

class Linear : public Module, public TargetableLayer {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true,
         InitScheme init = InitScheme::TorchDefault);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Linear"; }
  std::string describe() const override;

  Tensor& weight() override { return weight_; }
  Tensor& bias() { return bias_; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

 protected:
  void init_own_parameters(uint64_t seed, uint64_t& next_stream) override;

 private:
  int64_t in_, out_;
  InitScheme init_;
  Tensor weight_, bias_;  // bias_ undefined when the layer has none
};

}  // namespace tdrop
