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
  return linear(x, weight_, bias_);
}

std::string Linear::describe() const {
  return "Linear(" + std::to_string(in_) + " -> " + std::to_string(out_) +
         (bias_.defined() ? "" : ", no bias") + ")";
}

}  // namespace tdrop
