// Conv2d: y = x (*) W + b with W [out, in/groups, kh, kw], so one output channel's fan-in
// (in/groups * kh * kw weights) is one contiguous row: the row targeted dropout ranks, exactly as
// for Linear. With targeted dropout configured, forward uses the effective weight W'
// (layers/targeted.h); models mark their stem not targetable.
#pragma once
#include "kernels/conv2d.h"
#include "layers/init.h"
#include "layers/module.h"
#include "layers/targeted.h"

namespace tdrop {

struct Conv2dOptions {
  int64_t stride = 1, padding = 0, dilation = 1, groups = 1;
  bool bias = true;
  InitScheme init = InitScheme::TorchDefault;
  bool targetable = true;  // may targeted dropout be applied to this layer
};

class Conv2d : public Module, public TargetableLayer {
 public:
  // Square kernel `kernel` x `kernel`; e.g. Conv2d(16, 32, 3, {.stride = 2, .padding = 1}).
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, Conv2dOptions opt = {});
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Conv2d"; }
  std::string describe() const override;

  Tensor& weight() override { return weight_; }
  Tensor& bias() { return bias_; }
  int64_t in_channels() const { return in_; }
  int64_t out_channels() const { return out_; }
  int64_t kernel_size() const { return kernel_; }
  const Conv2dParams& params() const { return params_; }

 protected:
  void init_own_parameters(uint64_t seed, uint64_t& next_stream) override;

 private:
  int64_t in_, out_, kernel_;
  Conv2dParams params_;
  InitScheme init_;
  Tensor weight_, bias_;  // bias_ undefined when the layer has none
};

}  // namespace tdrop
