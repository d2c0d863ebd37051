#include "layers/conv2d.h"

#include "core/philox.h"
#include "kernels/conv_ops.h"

namespace tdrop {

Conv2d::Conv2d(int64_t in, int64_t out, int64_t kernel, Conv2dOptions opt)
    : in_(in), out_(out), kernel_(kernel),
      params_(Conv2dParams::square(opt.stride, opt.padding, opt.dilation, opt.groups)),
      init_(opt.init) {
  TDROP_CHECK(in > 0 && out > 0 && kernel > 0, "Conv2d: channels and kernel must be positive, got in=",
              in, " out=", out, " kernel=", kernel);
  TDROP_CHECK(opt.groups > 0 && in % opt.groups == 0 && out % opt.groups == 0, "Conv2d(", in,
              " -> ", out, "): groups=", opt.groups, " must divide both channel counts");
  TDROP_CHECK(opt.stride > 0 && opt.padding >= 0 && opt.dilation > 0, "Conv2d(", in, " -> ", out,
              "): invalid stride ", opt.stride, ", padding ", opt.padding, " or dilation ",
              opt.dilation);
  weight_ = register_parameter("weight", Tensor::zeros({out, in / opt.groups, kernel, kernel}));
  if (opt.bias) bias_ = register_parameter("bias", Tensor::zeros({out}));
  set_targetable(opt.targetable);
}

void Conv2d::init_own_parameters(uint64_t seed, uint64_t& next_stream) {
  const int64_t fan_in = in_ / params_.groups * kernel_ * kernel_;
  const int64_t fan_out = out_ / params_.groups * kernel_ * kernel_;
  fill_uniform(weight_, init_bound(init_, fan_in, fan_out), seed, kStreamInit + next_stream++);
  // Biases follow PyTorch: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) whatever the weight scheme.
  if (bias_.defined())
    fill_uniform(bias_, init_bound(InitScheme::TorchDefault, fan_in, fan_out), seed,
                 kStreamInit + next_stream++);
}

Tensor Conv2d::forward(const Tensor& x) {
  TDROP_CHECK(x.dim() == 4 && x.size(1) == in_, "Conv2d(", in_, " -> ", out_, "): input ",
              x.describe(), " is not [N, ", in_, ", H, W]");
  const Tensor w =
      td_.enabled() ? td_.effective(weight_, training(), rng_seed_, rng_step_) : weight_;
  return conv2d(x, w, bias_, params_);
}

std::string Conv2d::describe() const {
  std::string s = "Conv2d(" + std::to_string(in_) + " -> " + std::to_string(out_) + ", " +
                  std::to_string(kernel_) + "x" + std::to_string(kernel_);
  if (params_.stride_h != 1) s += ", stride " + std::to_string(params_.stride_h);
  if (params_.pad_h != 0) s += ", pad " + std::to_string(params_.pad_h);
  if (params_.dilation_h != 1) s += ", dilation " + std::to_string(params_.dilation_h);
  if (params_.groups != 1) s += ", groups " + std::to_string(params_.groups);
  if (!bias_.defined()) s += ", no bias";
  s += ")";
  if (td_.enabled()) s += " [" + td_.config().describe() + "]";
  else if (targetable_) s += " [targetable]";
  return s;
}

}  // namespace tdrop
