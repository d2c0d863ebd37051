#include "kernels/conv_ops.h"

#include "kernels/batch_norm.h"
#include "kernels/elementwise.h"
#include "kernels/shortcut.h"

namespace tdrop {
namespace {

bool cuda(const Tensor& t) { return t.device() == Device::CUDA; }

void check_float(const char* op, const char* what, const Tensor& t) {
  TDROP_CHECK(t.defined(), op, ": ", what, " is undefined");
  TDROP_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64, op, ": ", what,
              " must be F32 or F64, got ", t.describe());
}

// `t` must be defined and match `x` in dtype and device.
void check_like(const char* op, const char* what, const Tensor& t, const Tensor& x) {
  TDROP_CHECK(t.defined(), op, ": ", what, " is undefined");
  TDROP_CHECK(t.device() == x.device(), op, ": ", what, " ", t.describe(), " and input ",
              x.describe(), " are on different devices");
  TDROP_CHECK(t.dtype() == x.dtype(), op, ": ", what, " ", t.describe(), " and input ",
              x.describe(), " differ in dtype");
}

void check_nchw(const char* op, const Tensor& x) {
  check_float(op, "input", x);
  TDROP_CHECK(x.dim() == 4, op, ": input ", x.describe(), " is not [N, C, H, W]");
}

void check_channel_vector(const char* op, const char* what, const Tensor& t, const Tensor& x) {
  check_like(op, what, t, x);
  TDROP_CHECK(t.dim() == 1 && t.size(0) == x.size(1), op, ": ", what, " ", t.describe(),
              " does not match the ", x.size(1), " channels of input ", x.describe());
}

Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); }

// ---- conv2d --------------------------------------------------------------------------------

struct Conv2dNode : Node {
  Tensor x, w;  // contiguous copies of inputs[0], inputs[1]
  Conv2dParams p;
  const char* name() const override { return "conv2d"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor g = g_in.contiguous();
    Tensor gx, gw, gb;
    if (inputs[0].requires_grad()) {
      gx = empty_like(x);
      if (cuda(g)) conv2d_backward_data_cuda(g, w, p, gx);
      else conv2d_backward_data_cpu(g, w, p, gx);
    }
    if (inputs[1].requires_grad()) {
      gw = empty_like(w);
      if (cuda(g)) conv2d_backward_filter_cuda(g, x, p, gw);
      else conv2d_backward_filter_cpu(g, x, p, gw);
    }
    if (inputs[2].defined() && inputs[2].requires_grad()) {
      gb = empty_like(inputs[2]);
      if (cuda(g)) conv2d_backward_bias_cuda(g, gb);
      else conv2d_backward_bias_cpu(g, gb);
    }
    return {gx, gw, gb};
  }
};

// ---- batch_norm2d --------------------------------------------------------------------------

struct BatchNormNode : Node {
  Tensor x, gamma, mean, invstd;
  Tensor relu_out;  // the output, without history, when a ReLU was fused (its mask)
  bool batch_stats = true;
  const char* name() const override { return "batch_norm2d"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    Tensor g = g_in.contiguous();
    if (relu_out.defined()) {  // through the fused ReLU first: g where the output is > 0
      Tensor masked = empty_like(g);
      if (cuda(g)) binary_cuda(BinaryOp::ReluGrad, g, relu_out, masked);
      else binary_cpu(BinaryOp::ReluGrad, g, relu_out, masked);
      g = masked;
    }
    Tensor gx = empty_like(x), gg = empty_like(gamma), gb = empty_like(gamma);
    if (cuda(g)) batch_norm2d_backward_cuda(g, x, gamma, mean, invstd, batch_stats, gx, gg, gb);
    else batch_norm2d_backward_cpu(g, x, gamma, mean, invstd, batch_stats, gx, gg, gb);
    auto need = [&](size_t i, Tensor t) {
      return inputs[i].defined() && inputs[i].requires_grad() ? t : Tensor();
    };
    return {need(0, gx), need(1, gg), need(2, gb), need(3, g)};
  }
};

// ---- pooling -------------------------------------------------------------------------------

struct MaxPoolNode : Node {
  Tensor argmax;
  Shape x_shape;
  Pool2dParams p;
  const char* name() const override { return "max_pool2d"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty(x_shape, g.dtype(), g.device());
    if (cuda(g)) max_pool2d_backward_cuda(g, argmax, p, gx);
    else max_pool2d_backward_cpu(g, argmax, p, gx);
    return {gx};
  }
};

struct AvgPoolNode : Node {
  Shape x_shape;
  Pool2dParams p;
  const char* name() const override { return "avg_pool2d"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty(x_shape, g.dtype(), g.device());
    if (cuda(g)) avg_pool2d_backward_cuda(g, p, gx);
    else avg_pool2d_backward_cpu(g, p, gx);
    return {gx};
  }
};

struct GlobalAvgPoolNode : Node {
  Shape x_shape;
  const char* name() const override { return "global_avg_pool"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty(x_shape, g.dtype(), g.device());
    if (cuda(g)) global_avg_pool_backward_cuda(g, gx);
    else global_avg_pool_backward_cpu(g, gx);
    return {gx};
  }
};

struct ShortcutNode : Node {
  Shape x_shape;
  int64_t stride = 1;
  const char* name() const override { return "pad_channels_subsample"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty(x_shape, g.dtype(), g.device());
    if (cuda(g)) pad_channels_subsample_backward_cuda(g, stride, gx);
    else pad_channels_subsample_backward_cpu(g, stride, gx);
    return {gx};
  }
};

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p) {
  check_nchw("conv2d", x);
  check_like("conv2d", "weight", w, x);
  const Shape out_shape = conv2d_output_shape(x.shape(), w.shape(), p, "conv2d");
  if (bias.defined()) {
    check_like("conv2d", "bias", bias, x);
    TDROP_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), "conv2d: bias ", bias.describe(),
                " does not match weight ", w.describe(), " (expected [", w.size(0), "])");
  }
  auto node = std::make_shared<Conv2dNode>();
  node->x = x.contiguous();
  node->w = w.contiguous();
  node->p = p;
  const Tensor b = bias.defined() ? bias.contiguous() : Tensor();
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  if (cuda(x)) conv2d_forward_cuda(node->x, node->w, b, p, y);
  else conv2d_forward_cpu(node->x, node->w, b, p, y);
  return record(y, node, {x, w, bias});
}

Tensor batch_norm2d(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                    const Tensor& running_mean, const Tensor& running_var, bool training,
                    double momentum, double eps, const BnEpilogue& then) {
  const char* op = "batch_norm2d";
  check_nchw(op, x);
  check_channel_vector(op, "gamma", gamma, x);
  check_channel_vector(op, "beta", beta, x);
  check_channel_vector(op, "running_mean", running_mean, x);
  check_channel_vector(op, "running_var", running_var, x);
  TDROP_CHECK(running_mean.is_contiguous() && running_var.is_contiguous(), op,
              ": running statistics must be contiguous (they are updated in place)");
  TDROP_CHECK(!running_mean.requires_grad() && !running_var.requires_grad(), op,
              ": running statistics must not require a gradient");
  TDROP_CHECK(eps > 0 && momentum >= 0 && momentum <= 1, op, ": eps ", eps,
              " must be positive and momentum ", momentum, " in [0, 1]");
  TDROP_CHECK(!training || x.size(0) * x.size(2) * x.size(3) > 1, op,
              ": training needs more than one value per channel to estimate a variance, got "
              "input ",
              x.describe());
  if (then.residual.defined()) {
    check_like(op, "residual", then.residual, x);
    TDROP_CHECK(then.residual.shape() == x.shape(), op, ": residual ", then.residual.describe(),
                " does not match input ", x.describe());
  }
  auto node = std::make_shared<BatchNormNode>();
  node->x = x.contiguous();
  node->gamma = gamma.contiguous();
  node->batch_stats = training;
  node->mean = empty_like(gamma);
  node->invstd = empty_like(gamma);
  const Tensor b = beta.contiguous();
  const BnEpilogue fused{then.residual.defined() ? then.residual.contiguous() : Tensor(),
                         then.relu};
  Tensor y = empty_like(node->x);
  if (training) {
    if (cuda(x))
      batch_norm2d_train_cuda(node->x, node->gamma, b, running_mean, running_var, momentum, eps,
                              y, node->mean, node->invstd, fused);
    else
      batch_norm2d_train_cpu(node->x, node->gamma, b, running_mean, running_var, momentum, eps,
                             y, node->mean, node->invstd, fused);
  } else {
    if (cuda(x))
      batch_norm2d_eval_cuda(node->x, node->gamma, b, running_mean, running_var, eps, y,
                             node->mean, node->invstd, fused);
    else
      batch_norm2d_eval_cpu(node->x, node->gamma, b, running_mean, running_var, eps, y,
                            node->mean, node->invstd, fused);
  }
  // The mask must not hold y's history: y owns this node, and the node would own y.
  if (then.relu) node->relu_out = y.detach();
  return record(y, node, {x, gamma, beta, then.residual});
}

Tensor max_pool2d(const Tensor& x, const Pool2dParams& p) {
  check_nchw("max_pool2d", x);
  const Shape out_shape = pool2d_output_shape(x.shape(), p, "max_pool2d");
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  auto node = std::make_shared<MaxPoolNode>();
  node->argmax = Tensor::empty(out_shape, DType::I64, x.device());
  node->x_shape = x.shape();
  node->p = p;
  if (cuda(x)) max_pool2d_forward_cuda(xc, p, y, node->argmax);
  else max_pool2d_forward_cpu(xc, p, y, node->argmax);
  return record(y, node, {x});
}

Tensor avg_pool2d(const Tensor& x, const Pool2dParams& p) {
  check_nchw("avg_pool2d", x);
  const Shape out_shape = pool2d_output_shape(x.shape(), p, "avg_pool2d");
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  if (cuda(x)) avg_pool2d_forward_cuda(xc, p, y);
  else avg_pool2d_forward_cpu(xc, p, y);
  auto node = std::make_shared<AvgPoolNode>();
  node->x_shape = x.shape();
  node->p = p;
  return record(y, node, {x});
}

Tensor global_avg_pool(const Tensor& x) {
  check_nchw("global_avg_pool", x);
  TDROP_CHECK(x.size(2) > 0 && x.size(3) > 0, "global_avg_pool: input ", x.describe(),
              " has an empty plane");
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty({x.size(0), x.size(1)}, x.dtype(), x.device());
  if (cuda(x)) global_avg_pool_forward_cuda(xc, y);
  else global_avg_pool_forward_cpu(xc, y);
  auto node = std::make_shared<GlobalAvgPoolNode>();
  node->x_shape = x.shape();
  return record(y, node, {x});
}

Tensor pad_channels_subsample(const Tensor& x, int64_t out_channels, int64_t stride) {
  check_nchw("pad_channels_subsample", x);
  TDROP_CHECK(stride >= 1 && out_channels >= x.size(1), "pad_channels_subsample: input ",
              x.describe(), " cannot become ", out_channels, " channels with stride ", stride,
              " (need out_channels >= ", x.size(1), " and stride >= 1)");
  const Shape out_shape{x.size(0), out_channels, (x.size(2) + stride - 1) / stride,
                        (x.size(3) + stride - 1) / stride};
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  if (cuda(x)) pad_channels_subsample_cuda(xc, stride, y);
  else pad_channels_subsample_cpu(xc, stride, y);
  auto node = std::make_shared<ShortcutNode>();
  node->x_shape = x.shape();
  node->stride = stride;
  return record(y, node, {x});
}

}  // namespace tdrop
