// CUDA GEMM through cuBLAS, plus the bias broadcast that starts a linear layer's output.
//
// cuBLAS is column-major. A row-major [r, c] matrix with leading dimension c is, read
// column-major, its transpose [c, r]. So the row-major product C = op(A) op(B) is computed as the
// column-major product C^T = op(B)^T op(A)^T: swap the operands (B first), keep each operand's
// own transpose flag, and swap m and n. No data is moved.
#include <algorithm>
#include <climits>
#include <cstdint>

#include "core/cuda_check.h"
#include "kernels/gemm.h"

namespace tdrop {
namespace {

// c = beta * c, and exactly 0 when beta == 0 (BLAS semantics: C is not read, so NaN or Inf
// in an uninitialised C does not leak through 0 * C).
template <class T>
__global__ void scale_kernel(T* __restrict__ c, T beta, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    c[i] = beta == T(0) ? T(0) : c[i] * beta;
}

void scale_cuda(const Tensor& c, double beta) {
  const int64_t n = c.numel();
  if (c.dtype() == DType::F32)
    scale_kernel<float><<<cuda_blocks(n), 256, 0, cuda_stream()>>>(c.data<float>(),
                                                                   static_cast<float>(beta), n);
  else
    scale_kernel<double><<<cuda_blocks(n), 256, 0, cuda_stream()>>>(c.data<double>(), beta, n);
  TDROP_LAUNCH_CHECK("scale_kernel");
}

}  // namespace

void gemm_cuda(bool ta, bool tb, double alpha, const Tensor& a, const Tensor& b, double beta,
               const Tensor& c) {
  check_gemm_operands(ta, tb, a, b, c);
  const int64_t m = c.size(0), n = c.size(1);
  const int64_t k = ta ? a.size(0) : a.size(1);
  if (m == 0 || n == 0) return;  // nothing to write; cuBLAS rejects some of these shapes
  if (k == 0) {  // an empty sum: C = beta * C, done here rather than relying on a cuBLAS corner
    scale_cuda(c, beta);
    return;
  }
  const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
  const int lda = std::max(static_cast<int>(a.size(1)), 1);
  const int ldb = std::max(static_cast<int>(b.size(1)), 1);
  const cublasOperation_t op_a = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasHandle_t h = cublas_handle();
  if (c.dtype() == DType::F32) {
    const float al = static_cast<float>(alpha), be = static_cast<float>(beta);
    TDROP_CUBLAS_CHECK(cublasSgemm(h, op_b, op_a, in, im, ik, &al, b.data<float>(), ldb,
                                   a.data<float>(), lda, &be, c.data<float>(), in));
  } else {
    TDROP_CUBLAS_CHECK(cublasDgemm(h, op_b, op_a, in, im, ik, &alpha, b.data<double>(), ldb,
                                   a.data<double>(), lda, &beta, c.data<double>(), in));
  }
}

void gemm_batched_cuda(bool ta, bool tb, double alpha, const Tensor& a, const Tensor& b,
                       double beta, const Tensor& c) {
  const int64_t batch = c.size(0), m = c.size(1), n = c.size(2);
  const int64_t k = ta ? a.size(1) : a.size(2);
  TDROP_CHECK(a.dim() == 3 && b.dim() == 3 && a.size(0) == batch && b.size(0) == batch &&
                  (ta ? a.size(2) : a.size(1)) == m && (tb ? b.size(2) : b.size(1)) == k &&
                  (tb ? b.size(1) : b.size(2)) == n,
              "gemm_batched: op(A) of ", shape_str(a.shape()), (ta ? "^T" : ""),
              " times op(B) of ", shape_str(b.shape()), (tb ? "^T" : ""), " does not give C ",
              shape_str(c.shape()));
  TDROP_CHECK(batch <= INT_MAX && m <= INT_MAX && n <= INT_MAX && k <= INT_MAX &&
                  a.size(2) <= INT_MAX && b.size(2) <= INT_MAX,
              "gemm_batched: dimensions of ", shape_str(a.shape()), " x ", shape_str(b.shape()),
              " exceed cuBLAS's int range");
  if (batch == 0 || m == 0 || n == 0) return;
  if (k == 0) {
    scale_cuda(c, beta);
    return;
  }
  const int ib = static_cast<int>(batch), im = static_cast<int>(m), in = static_cast<int>(n),
            ik = static_cast<int>(k);
  const int lda = std::max(static_cast<int>(a.size(2)), 1);
  const int ldb = std::max(static_cast<int>(b.size(2)), 1);
  const long long sa = a.size(1) * a.size(2), sb = b.size(1) * b.size(2), sc = m * n;
  const cublasOperation_t op_a = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasHandle_t h = cublas_handle();
  // Row-major to column-major as in gemm_cuda: B first, m and n swapped.
  if (c.dtype() == DType::F32) {
    const float al = static_cast<float>(alpha), be = static_cast<float>(beta);
    TDROP_CUBLAS_CHECK(cublasSgemmStridedBatched(h, op_b, op_a, in, im, ik, &al, b.data<float>(),
                                                 ldb, sb, a.data<float>(), lda, sa, &be,
                                                 c.data<float>(), in, sc, ib));
  } else {
    TDROP_CUBLAS_CHECK(cublasDgemmStridedBatched(h, op_b, op_a, in, im, ik, &alpha,
                                                 b.data<double>(), ldb, sb, a.data<double>(),
                                                 lda, sa, &beta, c.data<double>(), in, sc, ib));
  }
}

namespace {

// out[r, j] = bias[j], copied as raw words of the element size so every dtype is covered, as
// the CPU's memcpy does. One element per thread; consecutive threads write consecutive words.
template <class W>
__global__ void fill_rows_kernel(const W* __restrict__ bias, W* __restrict__ out, int64_t cols,
                                 int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = bias[i % cols];
}

template <class W>
void fill_rows_launch(const Tensor& bias, const Tensor& out, int64_t cols, int64_t total) {
  fill_rows_kernel<W><<<cuda_blocks(total), 256, 0, cuda_stream()>>>(
      static_cast<const W*>(bias.raw_data()), static_cast<W*>(out.raw_data()), cols, total);
  TDROP_LAUNCH_CHECK("fill_rows_kernel");
}

}  // namespace

void fill_rows_cuda(const Tensor& bias, const Tensor& out) {
  const int64_t rows = out.size(0), cols = out.size(1), total = rows * cols;
  if (total == 0) return;
  switch (dtype_size(out.dtype())) {
    case 1: return fill_rows_launch<uint8_t>(bias, out, cols, total);
    case 4: return fill_rows_launch<uint32_t>(bias, out, cols, total);
    case 8: return fill_rows_launch<uint64_t>(bias, out, cols, total);
    default: fail("fill_rows: unsupported dtype ", dtype_name(out.dtype()));
  }
}

}  // namespace tdrop
