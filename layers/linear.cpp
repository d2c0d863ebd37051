#include "layers/linear.h"

#include "core/philox.h"
#include "kernels/ops.h"

namespace tdrop {

Linear::Linear(int64_t in, int64_t out, bool bias, InitScheme init)
    : in_(in), out_(out), init_(init),
      weight_(register_parameter("weight", Tensor::zeros({out, in}))),
      bias_(bias ? register_parameter("bias", Tensor::zeros({out})) : Tensor()) {
  TDROP_CHECK(in > 0 && out > 0, "Linear: features must be positive, got in=", in, " out=", out);
}

void Linear::init_own_parameters(uint64_t seed, uint64_t& next_stream) {
  fill_uniform(weight_, init_bound(init_, in_, out_), seed, kStreamInit + next_stream++);
  // Biases follow PyTorch: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) whatever the weight scheme.
  if (bias_.defined())
    fill_uniform(bias_, init_bound(InitScheme::TorchDefault, in_, out_), seed,
                 kStreamInit + next_stream++);
}

Tensor Linear::forward(const Tensor& x) {
  TDROP_CHECK(x.dim() == 2 && x.size(1) == in_, "Linear(", in_, " -> ", out_, "): input ",
              x.describe(), " is not [batch, ", in_, "]");
  const Tensor w =
      td_.enabled() ? td_.effective(weight_, training(), rng_seed_, rng_step_) : weight_;
  return linear(x, w, bias_);
}

std::string Linear::describe() const {
  std::string s = "Linear(" + std::to_string(in_) + " -> " + std::to_string(out_) +
                  (bias_.defined() ? "" : ", no bias") + ")";
  if (td_.enabled()) s += " [" + td_.config().describe() + "]";
  else if (targetable_) s += " [targetable]";
  return s;
}

}  // namespace tdrop
