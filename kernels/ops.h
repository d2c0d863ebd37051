// The differentiable ops users call. Each dispatches to the CPU or CUDA implementation of its
// family (kernels/<family>.cpp / .cu) and, when an input requires a gradient, records a Node.
#pragma once
#include <cstdint>
#include <vector>

#include "core/autograd.h"
#include "core/tensor.h"

namespace tdrop {

// Elementwise, NumPy broadcasting. Inputs must share dtype and device.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& a, double s);
Tensor mul_scalar(const Tensor& a, double s);
Tensor relu(const Tensor& x);

// 2-D matrix product [M, K] @ [K, N].
Tensor matmul(const Tensor& a, const Tensor& b);
// x [B, in] @ w[out, in]^T + bias[out] (bias may be undefined).
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias);

// Reductions; axes may be negative; an empty axes list reduces everything.
Tensor sum(const Tensor& x, std::vector<int64_t> axes = {}, bool keepdim = false);
Tensor mean(const Tensor& x, std::vector<int64_t> axes = {}, bool keepdim = false);
// Sums `g` down to `shape` (the inverse of broadcasting), used by broadcasting gradients.
Tensor sum_to(const Tensor& g, const Shape& shape);

// Differentiable reshape (a view when x is contiguous).
Tensor reshape(const Tensor& x, const Shape& shape);
// Differentiable swap of axes d0 and d1 (negative counts from the end); the result is
// contiguous.
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);

// Batched matrix product: a [B, M, K] times b [B, K, N] gives [B, M, N]; with trans_b, b is
// [B, N, K] and its transpose is used (attention's Q K^T, without copying K).
Tensor bmm(const Tensor& a, const Tensor& b, bool trans_b = false);
// Softmax over the last axis.
Tensor softmax(const Tensor& x);
// Layer normalisation over the last axis, scaled by gamma and shifted by beta (both [d]).
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps = 1e-5);

// Mean over rows of -log softmax(logits)[label]; logits [N, C], labels I64 [N]. A label
// outside [0, C) is an error naming its row. On CUDA, learning that means waiting for the GPU;
// a caller that reads its results back later anyway (the training loop) passes `bad_label_row`
// and gets the verdict as a one-element I64 tensor instead (the first bad row, or -1), which it
// must look at before trusting the loss (see cross_entropy_label_error). On the CPU a bad label
// always throws at once.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, Tensor* bad_label_row = nullptr);
// Index of the max along the last axis of a 2-D tensor: I64 [rows]. Not differentiable.
Tensor argmax(const Tensor& x);

// Dropout with rate p (scales kept values by 1/(1-p)); identity when p == 0.
Tensor dropout(const Tensor& x, float p, uint64_t seed, uint64_t stream);
// x * mask * scale with a fixed U8 mask of x's shape; gradient is masked the same way.
Tensor apply_mask(const Tensor& x, const Tensor& mask, double scale);

// In place, never recorded: grad += l1 * sign(w) (the subgradient of an L1 penalty l1 * |w|).
void add_l1_subgradient_(Tensor& grad, const Tensor& w, double l1);
// In place, never recorded: acc += alpha * x.
void axpy_(double alpha, const Tensor& x, Tensor& acc);
// Index of the first NaN/Inf element, or -1.
int64_t first_nonfinite(const Tensor& x);

}  // namespace tdrop
