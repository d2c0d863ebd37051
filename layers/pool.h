// Pooling layers (parameter-free): MaxPool2d, AvgPool2d and GlobalAvgPool ([N, C, H, W] ->
// [N, C], the head of the ResNets).
#pragma once
#include <string>

#include "kernels/conv_ops.h"
#include "layers/module.h"

namespace tdrop {

inline std::string pool_describe(const char* name, const Pool2dParams& p) {
  std::string s = std::string(name) + "(" + std::to_string(p.kernel_h) + "x" +
                  std::to_string(p.kernel_w);
  if (p.stride_h != p.kernel_h) s += ", stride " + std::to_string(p.stride_h);
  if (p.pad_h != 0) s += ", pad " + std::to_string(p.pad_h);
  return s + ")";
}

class MaxPool2d : public Module {
 public:
  // stride 0 = kernel (non-overlapping windows), as in PyTorch.
  explicit MaxPool2d(int64_t kernel, int64_t stride = 0, int64_t padding = 0)
      : p_(Pool2dParams::square(kernel, stride, padding)) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, p_); }
  std::string type_name() const override { return "MaxPool2d"; }
  std::string describe() const override { return pool_describe("MaxPool2d", p_); }

 private:
  Pool2dParams p_;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(int64_t kernel, int64_t stride = 0, int64_t padding = 0)
      : p_(Pool2dParams::square(kernel, stride, padding)) {}
  Tensor forward(const Tensor& x) override { return avg_pool2d(x, p_); }
  std::string type_name() const override { return "AvgPool2d"; }
  std::string describe() const override { return pool_describe("AvgPool2d", p_); }

 private:
  Pool2dParams p_;
};

class GlobalAvgPool : public Module {
 public:
  Tensor forward(const Tensor& x) override { return global_avg_pool(x); }
  std::string type_name() const override { return "GlobalAvgPool"; }
};

}  // namespace tdrop
