#include "kernels/ops.h"

#include <algorithm>
#include <cmath>

#include "core/grad_accumulate.h"
#include "kernels/cross_entropy.h"
#include "kernels/dropout.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/layer_norm.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"

namespace tdrop {

namespace {

void check_same(const char* op, const Tensor& a, const Tensor& b) {
  TDROP_CHECK(a.defined() && b.defined(), op, ": undefined input");
  TDROP_CHECK(a.device() == b.device(), op, ": inputs on different devices: ", a.describe(),
              " and ", b.describe());
  TDROP_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch: ", a.describe(), " and ",
              b.describe());
}

void check_float(const char* op, const Tensor& a) {
  TDROP_CHECK(a.defined(), op, ": undefined input");
  TDROP_CHECK(a.dtype() == DType::F32 || a.dtype() == DType::F64, op,
              ": expects a floating-point tensor, got ", a.describe());
}

bool cuda(const Tensor& t) { return t.device() == Device::CUDA; }

Tensor binary_raw(BinaryOp op, const Tensor& a, const Tensor& b) {
  check_same(binary_op_name(op), a, b);
  check_float(binary_op_name(op), a);
  Tensor out = Tensor::empty(broadcast_shapes(a.shape(), b.shape(), binary_op_name(op)),
                             a.dtype(), a.device());
  if (cuda(a)) binary_cuda(op, a, b, out);
  else binary_cpu(op, a, b, out);
  return out;
}

Tensor unary_raw(UnaryOp op, const Tensor& a, double alpha = 1, double beta = 0) {
  check_float("unary op", a);
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  if (cuda(a)) unary_cuda(op, a, alpha, beta, out);
  else unary_cpu(op, a, alpha, beta, out);
  return out;
}

struct BinaryNode : Node {
  BinaryOp op;
  explicit BinaryNode(BinaryOp o) : op(o) {}
  const char* name() const override { return binary_op_name(op); }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor &a = inputs[0], &b = inputs[1];
    Tensor ga, gb;
    const bool need_a = a.requires_grad(), need_b = b.requires_grad();
    switch (op) {
      case BinaryOp::Add:
        if (need_a) ga = sum_to(g, a.shape());
        if (need_b) gb = sum_to(g, b.shape());
        break;
      case BinaryOp::Sub:
        if (need_a) ga = sum_to(g, a.shape());
        if (need_b) gb = sum_to(unary_raw(UnaryOp::Affine, g, -1.0, 0.0), b.shape());
        break;
      case BinaryOp::Mul:
        if (need_a) ga = sum_to(binary_raw(BinaryOp::Mul, g, b), a.shape());
        if (need_b) gb = sum_to(binary_raw(BinaryOp::Mul, g, a), b.shape());
        break;
      case BinaryOp::Div:
        if (need_a) ga = sum_to(binary_raw(BinaryOp::Div, g, b), a.shape());
        if (need_b) {  // d(a/b)/db = -a/b^2
          Tensor q = binary_raw(BinaryOp::Div, binary_raw(BinaryOp::Div, a, b), b);
          gb = sum_to(unary_raw(UnaryOp::Affine, binary_raw(BinaryOp::Mul, g, q), -1.0, 0.0),
                      b.shape());
        }
        break;
      case BinaryOp::ReluGrad: fail("relu_backward is not differentiable");
    }
    return {ga, gb};
  }
};

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  return record(binary_raw(op, a, b), std::make_shared<BinaryNode>(op), {a, b});
}

struct AffineNode : Node {
  double alpha;
  explicit AffineNode(double a) : alpha(a) {}
  const char* name() const override { return "affine"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    return {unary_raw(UnaryOp::Affine, g, alpha, 0.0)};
  }
};

struct ReluNode : Node {
  const char* name() const override { return "relu"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    return {binary_raw(BinaryOp::ReluGrad, g, inputs[0])};
  }
};

void gemm(bool ta, bool tb, double alpha, const Tensor& a, const Tensor& b, double beta,
          const Tensor& c) {
  if (cuda(c)) gemm_cuda(ta, tb, alpha, a, b, beta, c);
  else gemm_cpu(ta, tb, alpha, a, b, beta, c);
}

// The kernels take dense row-major [batch, rows, cols] operands (their strides are derived from
// the shape), so a strided view here would silently multiply the wrong elements.
void gemm_batched(bool ta, bool tb, double alpha, const Tensor& a, const Tensor& b, double beta,
                  const Tensor& c) {
  TDROP_CHECK(a.dim() == 3 && b.dim() == 3 && c.dim() == 3, "gemm_batched: operands ",
              shape_str(a.shape()), ", ", shape_str(b.shape()), " and ", shape_str(c.shape()),
              " are not all [batch, rows, cols]");
  TDROP_CHECK(a.is_contiguous() && b.is_contiguous() && c.is_contiguous(),
              "gemm_batched: operands must be contiguous, got ", a.describe(), ", ", b.describe(),
              " and ", c.describe());
  TDROP_CHECK(a.dtype() == c.dtype() && b.dtype() == c.dtype() &&
                  (c.dtype() == DType::F32 || c.dtype() == DType::F64),
              "gemm_batched: dtypes ", dtype_name(a.dtype()), ", ", dtype_name(b.dtype()), ", ",
              dtype_name(c.dtype()), " are not one floating-point type");
  if (cuda(c)) gemm_batched_cuda(ta, tb, alpha, a, b, beta, c);
  else gemm_batched_cpu(ta, tb, alpha, a, b, beta, c);
}

struct BmmNode : Node {
  bool trans_b = false;
  const char* name() const override { return "bmm"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor g = g_in.contiguous();
    const Tensor a = inputs[0].contiguous(), b = inputs[1].contiguous();
    Tensor ga, gb;
    if (inputs[0].requires_grad()) {  // dA = G B^T, or G B when C = A B^T
      ga = Tensor::empty(a.shape(), a.dtype(), a.device());
      gemm_batched(false, !trans_b, 1.0, g, b, 0.0, ga);
    }
    if (inputs[1].requires_grad()) {  // dB = A^T G, or G^T A when C = A B^T
      gb = Tensor::empty(b.shape(), b.dtype(), b.device());
      if (trans_b) gemm_batched(true, false, 1.0, g, a, 0.0, gb);
      else gemm_batched(true, false, 1.0, a, g, 0.0, gb);
    }
    return {ga, gb};
  }
};

struct SoftmaxNode : Node {
  Tensor y;
  const char* name() const override { return "softmax"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty(y.shape(), y.dtype(), y.device());
    if (cuda(y)) softmax_backward_cuda(y, g, gx);
    else softmax_backward_cpu(y, g, gx);
    return {gx};
  }
};

struct LayerNormNode : Node {
  Tensor xhat, rstd;
  const char* name() const override { return "layer_norm"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor g = g_in.contiguous();
    const Tensor &gamma = inputs[1], &beta = inputs[2];
    Tensor gx, ggamma, gbeta;
    if (inputs[0].requires_grad()) {
      const Tensor g_xhat = binary_raw(BinaryOp::Mul, g, gamma);
      gx = Tensor::empty(xhat.shape(), xhat.dtype(), xhat.device());
      if (cuda(g)) layer_norm_backward_cuda(g_xhat, xhat, rstd, gx);
      else layer_norm_backward_cpu(g_xhat, xhat, rstd, gx);
    }
    if (gamma.requires_grad()) ggamma = sum_to(binary_raw(BinaryOp::Mul, g, xhat), gamma.shape());
    if (beta.requires_grad()) gbeta = sum_to(g, beta.shape());
    return {gx, ggamma, gbeta};
  }
};

struct TransposeNode : Node {
  int64_t d0 = 0, d1 = 0;
  const char* name() const override { return "transpose"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    return {g.transpose(d0, d1).contiguous()};
  }
};

struct MatmulNode : Node {
  const char* name() const override { return "matmul"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor g = g_in.contiguous();
    const Tensor &a = inputs[0], &b = inputs[1];
    Tensor ga, gb;
    if (a.requires_grad()) {  // dA = G B^T
      ga = Tensor::empty(a.shape(), a.dtype(), a.device());
      gemm(false, true, 1.0, g, b.contiguous(), 0.0, ga);
    }
    if (b.requires_grad()) {  // dB = A^T G
      gb = Tensor::empty(b.shape(), b.dtype(), b.device());
      gemm(true, false, 1.0, a.contiguous(), g, 0.0, gb);
    }
    return {ga, gb};
  }
};

struct LinearNode : Node {
  Tensor x, w;  // contiguous copies of inputs[0], inputs[1] (the same tensors when contiguous)
  const char* name() const override { return "linear"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor g = g_in.contiguous();
    const Tensor& b = inputs[2];
    Tensor gx, gw, gb;
    if (inputs[0].requires_grad()) {  // dX = G W
      gx = Tensor::empty(x.shape(), x.dtype(), x.device());
      gemm(false, false, 1.0, g, w, 0.0, gx);
    }
    if (inputs[1].requires_grad()) {  // dW = G^T X
      gw = Tensor::empty(w.shape(), w.dtype(), w.device());
      gemm(true, false, 1.0, g, x, 0.0, gw);
    }
    if (b.defined() && b.requires_grad()) gb = sum_to(g, b.shape());
    return {gx, gw, gb};
  }
};

std::vector<bool> reduce_mask(const Tensor& x, std::vector<int64_t> axes, const char* op) {
  const int64_t nd = x.dim();
  std::vector<bool> mask(static_cast<size_t>(nd), axes.empty());
  for (int64_t a : axes) {
    const int64_t d = a < 0 ? a + nd : a;
    TDROP_CHECK(d >= 0 && d < nd, op, ": axis ", a, " out of range for ", x.describe());
    mask[static_cast<size_t>(d)] = true;
  }
  return mask;
}

Tensor sum_raw(const Tensor& x, const std::vector<bool>& mask) {
  Shape keep = x.shape();
  for (size_t d = 0; d < keep.size(); ++d)
    if (mask[d]) keep[d] = 1;
  Tensor out = Tensor::empty(keep, x.dtype(), x.device());
  if (cuda(x)) sum_axes_cuda(x, mask, out);
  else sum_axes_cpu(x, mask, out);
  return out;
}

Shape drop_reduced(const Shape& keep, const std::vector<bool>& mask) {
  Shape s;
  for (size_t d = 0; d < keep.size(); ++d)
    if (!mask[d]) s.push_back(keep[d]);
  return s;
}

struct SumNode : Node {
  Shape in_shape, keep_shape;
  double scale;
  SumNode(Shape i, Shape k, double s) : in_shape(std::move(i)), keep_shape(std::move(k)), scale(s) {}
  const char* name() const override { return "sum"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    // Broadcast g (in keepdim form) back over the reduced axes.
    Tensor gk = g.contiguous().reshape(keep_shape);
    Tensor ones = Tensor::full(in_shape, scale, g.dtype(), g.device());
    return {binary_raw(BinaryOp::Mul, ones, gk)};
  }
};

Tensor reduce(const Tensor& x, std::vector<int64_t> axes, bool keepdim, bool is_mean) {
  const char* op = is_mean ? "mean" : "sum";
  check_float(op, x);
  const std::vector<bool> mask = reduce_mask(x, std::move(axes), op);
  Tensor out = sum_raw(x, mask);
  int64_t count = 1;
  for (size_t d = 0; d < mask.size(); ++d)
    if (mask[d]) count *= x.shape()[d];
  const double scale = is_mean ? 1.0 / static_cast<double>(std::max<int64_t>(count, 1)) : 1.0;
  if (is_mean) out = unary_raw(UnaryOp::Affine, out, scale, 0.0);
  const Shape keep = out.shape();
  if (!keepdim) out = out.reshape(drop_reduced(keep, mask));
  return record(out, std::make_shared<SumNode>(x.shape(), keep, scale), {x});
}

struct ReshapeNode : Node {
  Shape in_shape;
  explicit ReshapeNode(Shape s) : in_shape(std::move(s)) {}
  const char* name() const override { return "reshape"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {g.contiguous().reshape(in_shape)}; }
};

struct CrossEntropyNode : Node {
  Tensor probs, labels;
  const char* name() const override { return "cross_entropy"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor gl = Tensor::empty(probs.shape(), probs.dtype(), probs.device());
    // On CUDA the gradient of the loss stays on the device: reading it here would make the host
    // wait for the whole forward pass in every training step.
    if (cuda(probs))
      cross_entropy_backward_cuda(probs, labels, g.to(probs.dtype()).contiguous(), gl);
    else
      cross_entropy_backward_cpu(probs, labels, g.item() / static_cast<double>(probs.size(0)), gl);
    return {gl};
  }
};

struct MaskNode : Node {
  Tensor mask;
  double scale;
  MaskNode(Tensor m, double s) : mask(std::move(m)), scale(s) {}
  const char* name() const override { return "apply_mask"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor g = g_in.contiguous();
    Tensor out = Tensor::empty(g.shape(), g.dtype(), g.device());
    if (cuda(g)) apply_mask_cuda(g, mask, scale, out);
    else apply_mask_cpu(g, mask, scale, out);
    return {out};
  }
};

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Div, a, b); }

Tensor add_scalar(const Tensor& a, double s) {
  check_float("add_scalar", a);  // named here: unary_raw only knows its kernel
  return record(unary_raw(UnaryOp::Affine, a, 1.0, s), std::make_shared<AffineNode>(1.0), {a});
}
Tensor mul_scalar(const Tensor& a, double s) {
  check_float("mul_scalar", a);
  return record(unary_raw(UnaryOp::Affine, a, s, 0.0), std::make_shared<AffineNode>(s), {a});
}

Tensor relu(const Tensor& x) {
  check_float("relu", x);
  return record(unary_raw(UnaryOp::Relu, x), std::make_shared<ReluNode>(), {x});
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_same("matmul", a, b);
  check_float("matmul", a);
  TDROP_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0), "matmul: shapes ",
              shape_str(a.shape()), " and ", shape_str(b.shape()), " are not [M, K] and [K, N]");
  Tensor out = Tensor::empty({a.size(0), b.size(1)}, a.dtype(), a.device());
  gemm(false, false, 1.0, a.contiguous(), b.contiguous(), 0.0, out);
  return record(out, std::make_shared<MatmulNode>(), {a, b});
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_same("linear", x, w);
  check_float("linear", x);
  TDROP_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "linear: input ",
              shape_str(x.shape()), " does not match weight ", shape_str(w.shape()),
              " (expected input [batch, ", w.dim() == 2 ? w.size(1) : -1, "])");
  Tensor out = Tensor::empty({x.size(0), w.size(0)}, x.dtype(), x.device());
  double beta = 0.0;
  if (bias.defined()) {
    check_same("linear (bias)", x, bias);
    TDROP_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), "linear: bias ",
                shape_str(bias.shape()), " does not match weight ", shape_str(w.shape()));
    if (cuda(out)) fill_rows_cuda(bias.contiguous(), out);
    else fill_rows_cpu(bias.contiguous(), out);
    beta = 1.0;
  }
  const Tensor xc = x.contiguous(), wc = w.contiguous();
  gemm(false, true, 1.0, xc, wc, beta, out);
  auto node = std::make_shared<LinearNode>();
  node->x = xc;
  node->w = wc;
  return record(out, node, {x, w, bias});
}

Tensor sum(const Tensor& x, std::vector<int64_t> axes, bool keepdim) {
  return reduce(x, std::move(axes), keepdim, false);
}
Tensor mean(const Tensor& x, std::vector<int64_t> axes, bool keepdim) {
  return reduce(x, std::move(axes), keepdim, true);
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const size_t lead = g.shape().size() - shape.size();
  std::vector<bool> mask(g.shape().size(), false);
  for (size_t d = 0; d < g.shape().size(); ++d)
    mask[d] = d < lead || (shape[d - lead] == 1 && g.shape()[d] != 1);
  return sum_raw(g, mask).reshape(shape);
}

Tensor bmm(const Tensor& a, const Tensor& b, bool trans_b) {
  check_same("bmm", a, b);
  check_float("bmm", a);
  const int64_t k = a.dim() == 3 ? a.size(2) : -1;
  TDROP_CHECK(a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0) &&
                  (trans_b ? b.size(2) : b.size(1)) == k,
              "bmm: shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
              " are not [B, M, K] and ", trans_b ? "[B, N, K]" : "[B, K, N]");
  const int64_t n = trans_b ? b.size(1) : b.size(2);
  Tensor out = Tensor::empty({a.size(0), a.size(1), n}, a.dtype(), a.device());
  gemm_batched(false, trans_b, 1.0, a.contiguous(), b.contiguous(), 0.0, out);
  auto node = std::make_shared<BmmNode>();
  node->trans_b = trans_b;
  return record(out, node, {a, b});
}

Tensor softmax(const Tensor& x) {
  check_float("softmax", x);
  TDROP_CHECK(x.dim() >= 1 && x.shape().back() > 0, "softmax: needs a non-empty last axis, got ",
              x.describe());
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (cuda(x)) softmax_forward_cuda(xc, y);
  else softmax_forward_cpu(xc, y);
  auto node = std::make_shared<SoftmaxNode>();
  node->y = y.detach();  // the output's data without its node: holding y itself is a cycle
  return record(y, node, {x});
}

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  check_float("layer_norm", x);
  check_same("layer_norm", x, gamma);
  check_same("layer_norm", x, beta);
  TDROP_CHECK(x.dim() >= 1 && x.shape().back() > 0 && gamma.shape() == Shape{x.shape().back()} &&
                  beta.shape() == gamma.shape(),
              "layer_norm: x ", x.describe(), " needs gamma and beta of shape [",
              x.dim() ? x.shape().back() : 0, "], got ", gamma.describe(), " and ",
              beta.describe());
  TDROP_CHECK(eps > 0 && std::isfinite(eps), "layer_norm: eps must be positive, got ", eps);
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor xhat = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor rstd = Tensor::empty({last_axis_rows(x.shape())}, x.dtype(), x.device());
  const Tensor g = gamma.contiguous(), b = beta.contiguous();
  if (cuda(x)) layer_norm_forward_cuda(xc, g, b, eps, y, xhat, rstd);
  else layer_norm_forward_cpu(xc, g, b, eps, y, xhat, rstd);
  auto node = std::make_shared<LayerNormNode>();
  node->xhat = xhat;
  node->rstd = rstd;
  return record(y, node, {x, gamma, beta});
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  TDROP_CHECK(x.defined(), "transpose: undefined input");
  auto node = std::make_shared<TransposeNode>();
  node->d0 = d0;
  node->d1 = d1;
  return record(x.transpose(d0, d1).contiguous(), node, {x});
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  return record(x.reshape(shape), std::make_shared<ReshapeNode>(x.shape()), {x});
}

Tensor cross_entropy(const Tensor& logits, const Tensor& labels, Tensor* bad_label_row) {
  check_float("cross_entropy", logits);
  TDROP_CHECK(logits.dim() == 2 && logits.size(1) > 0, "cross_entropy: logits must be [N, C], got ",
              logits.describe());
  TDROP_CHECK(labels.defined() && labels.dtype() == DType::I64 && labels.dim() == 1 &&
                  labels.size(0) == logits.size(0),
              "cross_entropy: labels must be I64 [", logits.size(0), "], got ", labels.describe());
  TDROP_CHECK(labels.device() == logits.device(), "cross_entropy: logits ", logits.describe(),
              " and labels ", labels.describe(), " are on different devices");
  TDROP_CHECK(logits.size(0) > 0, "cross_entropy: empty batch");
  const Tensor x = logits.contiguous(), y = labels.contiguous();
  Tensor losses = Tensor::empty({x.size(0)}, x.dtype(), x.device());
  Tensor probs = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (cuda(x)) {
    cross_entropy_forward_cuda(x, y, losses, probs, bad_label_row);
  } else {
    cross_entropy_forward_cpu(x, y, losses, probs);
    if (bad_label_row != nullptr) *bad_label_row = Tensor::full({1}, -1, DType::I64);
  }
  Tensor out;
  {
    NoGradGuard ng;
    out = mean(losses);
  }
  auto node = std::make_shared<CrossEntropyNode>();
  node->probs = probs;
  node->labels = y;
  return record(out, node, {logits});  // x may be a copy, which needs no gradient
}

Tensor argmax(const Tensor& x) {
  check_float("argmax", x);
  TDROP_CHECK(x.dim() == 2, "argmax: expects [rows, cols], got ", x.describe());
  TDROP_CHECK(x.size(1) > 0, "argmax: no columns in ", x.describe());
  const Tensor xc = x.contiguous();
  Tensor out = Tensor::empty({x.size(0)}, DType::I64, x.device());
  if (cuda(x)) argmax_rows_cuda(xc, out);
  else argmax_rows_cpu(xc, out);
  return out;
}

Tensor dropout(const Tensor& x, float p, uint64_t seed, uint64_t stream) {
  check_float("dropout", x);
  TDROP_CHECK(p >= 0.0f && p <= 1.0f, "dropout: rate ", p, " is outside [0, 1]");
  if (p == 0.0f) return x;
  const Tensor xc = x.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mask = Tensor::empty(x.shape(), DType::U8, x.device());
  if (cuda(x)) dropout_cuda(xc, p, seed, stream, out, mask);
  else dropout_cpu(xc, p, seed, stream, out, mask);
  // The backward scales by the forward's factor, computed as the kernels compute it (in the
  // tensor's dtype): 1 / (1 - p) in double rounds to a float one ulp away for some p.
  const double scale = p >= 1.0f                   ? 0.0
                       : x.dtype() == DType::F32 ? static_cast<double>(1.0f / (1.0f - p))
                                                 : 1.0 / (1.0 - static_cast<double>(p));
  return record(out, std::make_shared<MaskNode>(mask, scale), {x});
}

Tensor apply_mask(const Tensor& x, const Tensor& mask, double scale) {
  check_float("apply_mask", x);
  TDROP_CHECK(mask.dtype() == DType::U8 && mask.numel() == x.numel() &&
                  mask.device() == x.device(),
              "apply_mask: mask ", mask.describe(), " does not fit ", x.describe());
  const Tensor xc = x.contiguous(), mc = mask.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (cuda(x)) apply_mask_cuda(xc, mc, scale, out);
  else apply_mask_cpu(xc, mc, scale, out);
  return record(out, std::make_shared<MaskNode>(mc, scale), {x});
}

void axpy_(double alpha, const Tensor& x, Tensor& acc) {
  check_same("axpy_", x, acc);
  TDROP_CHECK(x.shape() == acc.shape() && acc.is_contiguous(), "axpy_: ", x.describe(),
              " into ", acc.describe());
  const Tensor xc = x.contiguous();
  if (cuda(acc)) axpy_cuda(alpha, xc, acc);
  else axpy_cpu(alpha, xc, acc);
}

void add_l1_subgradient_(Tensor& grad, const Tensor& w, double l1) {
  axpy_(1.0, unary_raw(UnaryOp::Sign, w, l1, 0.0), grad);
}

int64_t first_nonfinite(const Tensor& x) {
  return cuda(x) ? first_nonfinite_cuda(x.contiguous()) : first_nonfinite_cpu(x);
}

AnomalyCheckFn& anomaly_check_hook() {
  static AnomalyCheckFn fn = [](const Tensor& t, const char* op, const char* what) {
    if (t.dtype() != DType::F32 && t.dtype() != DType::F64) return;
    const int64_t i = first_nonfinite(t);
    TDROP_CHECK(i < 0, "anomaly: the ", what, " of ", op, " ", t.describe(),
                " holds a non-finite value at flat index ", i);
  };
  return fn;
}

// The autograd engine accumulates a leaf's gradient with axpy_ and sums the gradients between
// nodes with the add kernel: both round a + g once, so either gives the same bits.
GradAccumulateFn& grad_accumulate_hook() {
  static GradAccumulateFn fn = [](Tensor& acc, const Tensor& g) { axpy_(1.0, g, acc); };
  return fn;
}

GradSumFn& grad_sum_hook() {
  static GradSumFn fn = [](const Tensor& a, const Tensor& g) {
    return binary_raw(BinaryOp::Add, a, g);
  };
  return fn;
}

}  // namespace tdrop
