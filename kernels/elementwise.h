// Elementwise ops: binary with NumPy broadcasting, unary/affine, and their gradients' helpers.
// The CPU versions (elementwise.cpp) are the reference; the CUDA versions (elementwise.cu)
// compute the same formulas in the same precision.
#pragma once
#include "core/copy.h"
#include "core/tensor.h"

namespace tdrop {

enum class BinaryOp { Add, Sub, Mul, Div, ReluGrad /* a * (b > 0) */ };
enum class UnaryOp { Relu, Affine /* a * alpha + beta */, Abs, Sign /* alpha * sign(a), sign(0) = 0 */ };

const char* binary_op_name(BinaryOp op);

// Output shape of broadcasting a against b; throws naming `op` and both shapes on mismatch.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// Strides of `t` viewed as `out_shape` (right-aligned, 0 on broadcast dims).
StridedIndex broadcast_index(const Tensor& t, const Shape& out_shape);

// out (contiguous, shape = broadcast of a, b) = op(a, b). Same dtype and device for all three.
void binary_cpu(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void binary_cuda(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);

// out (contiguous, same shape as a) = op(a).
void unary_cpu(UnaryOp op, const Tensor& a, double alpha, double beta, const Tensor& out);
void unary_cuda(UnaryOp op, const Tensor& a, double alpha, double beta, const Tensor& out);

// acc += alpha * x, in place; same shape, both contiguous.
void axpy_cpu(double alpha, const Tensor& x, const Tensor& acc);
void axpy_cuda(double alpha, const Tensor& x, const Tensor& acc);

// Index of the first non-finite value of a floating tensor, or -1.
int64_t first_nonfinite_cpu(const Tensor& x);
int64_t first_nonfinite_cuda(const Tensor& x);

}  // namespace tdrop
