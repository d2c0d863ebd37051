#include "layers/residual.h"

#include "kernels/conv_ops.h"
#include "kernels/ops.h"

namespace tdrop {

namespace {
std::string block_text(const char* name, int64_t in, int64_t out, int64_t stride,
                       const char* shortcut) {
  return std::string(name) + "(" + std::to_string(in) + " -> " + std::to_string(out) +
         (stride != 1 ? ", stride " + std::to_string(stride) : std::string()) + ", " + shortcut +
         ")";
}
}  // namespace

BasicBlock::BasicBlock(int64_t in, int64_t out, int64_t stride, InitScheme init)
    : in_(in), out_(out), stride_(stride) {
  TDROP_CHECK(out >= in && stride >= 1, "BasicBlock(", in, " -> ", out, ", stride ", stride,
              "): the option-A shortcut needs out >= in and stride >= 1");
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(
      in, out, 3, Conv2dOptions{.stride = stride, .padding = 1, .bias = false, .init = init}));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(out));
  conv2_ = register_module("conv2", std::make_shared<Conv2d>(
      out, out, 3, Conv2dOptions{.padding = 1, .bias = false, .init = init}));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(out));
}

// relu(bn(...)) and relu(bn(...) + shortcut) run fused into batch norm's output pass.
Tensor BasicBlock::forward(const Tensor& x) {
  const Tensor h = bn1_->forward((*conv1_)(x), Tensor(), /*relu=*/true);
  const bool identity = stride_ == 1 && in_ == out_;
  return bn2_->forward((*conv2_)(h),
                       identity ? x : pad_channels_subsample(x, out_, stride_), /*relu=*/true);
}

std::string BasicBlock::describe() const {
  return block_text("BasicBlock", in_, out_, stride_,
                    stride_ == 1 && in_ == out_ ? "identity" : "option-A shortcut");
}

PreActBlock::PreActBlock(int64_t in, int64_t out, int64_t stride, bool projection,
                         InitScheme init, double bn_eps, double bn_momentum)
    : in_(in), out_(out), stride_(stride) {
  TDROP_CHECK(projection || (in == out && stride == 1), "PreActBlock(", in, " -> ", out,
              ", stride ", stride, "): an identity shortcut needs in == out and stride 1");
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(in, bn_eps, bn_momentum));
  if (projection)
    shortcut_ = register_module("shortcut", std::make_shared<Conv2d>(
        in, out, 1, Conv2dOptions{.stride = stride, .bias = false, .init = init}));
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(
      in, out, 3, Conv2dOptions{.stride = stride, .padding = 1, .bias = false, .init = init}));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(out, bn_eps, bn_momentum));
  conv2_ = register_module("conv2", std::make_shared<Conv2d>(
      out, out, 3, Conv2dOptions{.padding = 1, .bias = false, .init = init}));
}

Tensor PreActBlock::forward(const Tensor& x) {
  const Tensor a = bn1_->forward(x, Tensor(), /*relu=*/true);
  const Tensor skip = shortcut_ ? (*shortcut_)(a) : x;
  const Tensor h = bn2_->forward((*conv1_)(a), Tensor(), /*relu=*/true);
  return add((*conv2_)(h), skip);
}

std::string PreActBlock::describe() const {
  return block_text("PreActBlock", in_, out_, stride_,
                    shortcut_ ? "1x1 projection" : "identity");
}

}  // namespace tdrop
