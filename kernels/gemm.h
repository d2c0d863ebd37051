// C = alpha * op(A) @ op(B) + beta * C on row-major, contiguous 2-D tensors, where op(X) is X or
// X^T. OpenBLAS sgemm/dgemm on CPU, cuBLAS on CUDA (fp32 math, no TF32, so results match CPU
// within fp32 rounding).
#pragma once
#include "core/tensor.h"

namespace tdrop {

// Shapes that multiply, one floating-point dtype, dimensions within BLAS's int: else an error
// naming the shapes (both paths call it).
void check_gemm_operands(bool trans_a, bool trans_b, const Tensor& a, const Tensor& b,
                         const Tensor& c);
void gemm_cpu(bool trans_a, bool trans_b, double alpha, const Tensor& a, const Tensor& b,
              double beta, const Tensor& c);
void gemm_cuda(bool trans_a, bool trans_b, double alpha, const Tensor& a, const Tensor& b,
               double beta, const Tensor& c);

// The same for a batch of products: a, b and c are contiguous 3-D tensors and c[i] =
// alpha * op(a[i]) @ op(b[i]) + beta * c[i] (cuBLAS's strided-batched GEMM on CUDA).
void gemm_batched_cpu(bool trans_a, bool trans_b, double alpha, const Tensor& a, const Tensor& b,
                      double beta, const Tensor& c);
void gemm_batched_cuda(bool trans_a, bool trans_b, double alpha, const Tensor& a, const Tensor& b,
                       double beta, const Tensor& c);

// out[r, :] = bias for every row r (the starting C of a linear layer). out is [rows, n].
void fill_rows_cpu(const Tensor& bias, const Tensor& out);
void fill_rows_cuda(const Tensor& bias, const Tensor& out);

}  // namespace tdrop
