// Residual blocks of the CIFAR ResNets.
//
// BasicBlock (He et al. 2016, "Deep Residual Learning", CIFAR-10 networks):
//   y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)),  3x3 convolutions, conv1 strided;
//   shortcut = identity, or option A (stride-th pixels plus zero channels, no parameters) when
//   the block changes resolution or width.
// PreActBlock (He et al. 2016, "Identity Mappings", as in the targeted-dropout reference ResNet):
//   a = relu(bn1(x));  y = conv2(relu(bn2(conv1(a)))) + shortcut,
//   shortcut = a 1x1 strided projection of a when `projection`, else x itself.
// Every convolution is bias-free (a BatchNorm follows or the sum is normalised next) and
// targetable.
#pragma once
#include <memory>

#include "layers/batch_norm.h"
#include "layers/conv2d.h"
#include "layers/module.h"

namespace tdrop {

class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride,
             InitScheme init = InitScheme::KaimingUniform);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "BasicBlock"; }
  std::string describe() const override;

 private:
  int64_t in_, out_, stride_;
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
};

class PreActBlock : public Module {
 public:
  PreActBlock(int64_t in_channels, int64_t out_channels, int64_t stride, bool projection,
              InitScheme init = InitScheme::KaimingUniform, double bn_eps = 1e-5,
              double bn_momentum = 0.1);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "PreActBlock"; }
  std::string describe() const override;

 private:
  int64_t in_, out_, stride_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<Conv2d> conv1_, conv2_, shortcut_;  // shortcut_ null without projection
};

}  // namespace tdrop
