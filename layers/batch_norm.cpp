#include "layers/batch_norm.h"

#include <sstream>

#include "kernels/conv_ops.h"

namespace tdrop {

BatchNorm2d::BatchNorm2d(int64_t channels, double eps, double momentum)
    : channels_(channels), eps_(eps), momentum_(momentum) {
  TDROP_CHECK(channels > 0, "BatchNorm2d: channels must be positive, got ", channels);
  TDROP_CHECK(eps > 0 && momentum >= 0 && momentum <= 1, "BatchNorm2d(", channels, "): eps ", eps,
              " must be positive and momentum ", momentum, " in [0, 1]");
  gamma_ = register_parameter("weight", Tensor::full({channels}, 1.0));
  beta_ = register_parameter("bias", Tensor::zeros({channels}));
  running_mean_ = register_buffer("running_mean", Tensor::zeros({channels}));
  running_var_ = register_buffer("running_var", Tensor::full({channels}, 1.0));
}

// Nothing random: a reset restores the identity transform and fresh statistics.
void BatchNorm2d::init_own_parameters(uint64_t, uint64_t&) {
  gamma_.copy_(Tensor::full({channels_}, 1.0));
  beta_.copy_(Tensor::zeros({channels_}));
  reset_running_stats();
}

void BatchNorm2d::set_momentum(double momentum) {
  TDROP_CHECK(momentum >= 0 && momentum <= 1, "BatchNorm2d(", channels_, ")",
              path().empty() ? "" : " " + path(), ": momentum ", momentum, " is outside [0, 1]");
  momentum_ = momentum;
}

void BatchNorm2d::reset_running_stats() {
  running_mean_.copy_(Tensor::zeros({channels_}));
  running_var_.copy_(Tensor::full({channels_}, 1.0));
}

Tensor BatchNorm2d::forward(const Tensor& x) { return forward(x, Tensor(), false); }

Tensor BatchNorm2d::forward(const Tensor& x, const Tensor& residual, bool relu) {
  const LayerScope scope(path());  // parents call this form directly, not through operator()
  TDROP_CHECK(x.dim() == 4 && x.size(1) == channels_, "BatchNorm2d(", channels_, "): input ",
              x.describe(), " is not [N, ", channels_, ", H, W]");
  return batch_norm2d(x, gamma_, beta_, running_mean_, running_var_, training(), momentum_, eps_,
                      BnEpilogue{residual, relu});
}

std::string BatchNorm2d::describe() const {
  std::ostringstream os;
  os << "BatchNorm2d(" << channels_;
  if (eps_ != 1e-5) os << ", eps " << eps_;
  if (momentum_ != 0.1) os << ", momentum " << momentum_;
  os << ")";
  return os.str();
}

}  // namespace tdrop
