// BatchNorm2d over the channels of NCHW activations, with learnable scale ("weight", ones) and
// shift ("bias", zeros), and running statistics kept as buffers ("running_mean" zeros,
// "running_var" ones) that training updates and evaluation uses. Defaults as in PyTorch.
#pragma once
#include "layers/module.h"

namespace tdrop {

class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t channels, double eps = 1e-5, double momentum = 0.1);
  Tensor forward(const Tensor& x) override;
  // relu(bn(x) + residual) in one pass (kernels/batch_norm.h, BnEpilogue); the same bits as
  // relu(add(forward(x), residual)). An undefined residual adds nothing.
  Tensor forward(const Tensor& x, const Tensor& residual, bool relu);
  std::string type_name() const override { return "BatchNorm2d"; }
  std::string describe() const override;

  Tensor& weight() { return gamma_; }
  Tensor& bias() { return beta_; }
  Tensor& running_mean() { return running_mean_; }
  Tensor& running_var() { return running_var_; }
  int64_t channels() const { return channels_; }
  double momentum() const { return momentum_; }
  // Weight of each batch in the running statistics, in [0, 1] (1: the last batch's alone).
  void set_momentum(double momentum);
  // Back to the statistics of a new layer: mean 0, variance 1.
  void reset_running_stats();

 protected:
  void init_own_parameters(uint64_t seed, uint64_t& next_stream) override;

 private:
  int64_t channels_;
  double eps_, momentum_;
  Tensor gamma_, beta_, running_mean_, running_var_;
};

}  // namespace tdrop
