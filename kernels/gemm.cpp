#include "kernels/gemm.h"

#include <cblas.h>

#include <climits>
#include <cstring>

namespace tdrop {

void check_gemm_operands(bool ta, bool tb, const Tensor& a, const Tensor& b, const Tensor& c) {
  const int64_t m = c.size(0), n = c.size(1);
  const int64_t k = ta ? a.size(0) : a.size(1);
  TDROP_CHECK((ta ? a.size(1) : a.size(0)) == m && (tb ? b.size(1) : b.size(0)) == k &&
                  (tb ? b.size(0) : b.size(1)) == n,
              "gemm: op(A) of ", shape_str(a.shape()), (ta ? "^T" : ""), " times op(B) of ",
              shape_str(b.shape()), (tb ? "^T" : ""), " does not give C ", shape_str(c.shape()));
  TDROP_CHECK(a.dtype() == c.dtype() && b.dtype() == c.dtype() &&
                  (c.dtype() == DType::F32 || c.dtype() == DType::F64),
              "gemm: dtypes ", dtype_name(a.dtype()), ", ", dtype_name(b.dtype()), ", ",
              dtype_name(c.dtype()), " are not one floating-point type");
  TDROP_CHECK(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && a.size(1) <= INT_MAX &&
                  b.size(1) <= INT_MAX,
              "gemm: dimensions of ", shape_str(a.shape()), " x ", shape_str(b.shape()),
              " exceed BLAS's int range");
}

void gemm_cpu(bool ta, bool tb, double alpha, const Tensor& a, const Tensor& b, double beta,
              const Tensor& c) {
  check_gemm_operands(ta, tb, a, b, c);
  const int m = static_cast<int>(c.size(0)), n = static_cast<int>(c.size(1));
  const int k = static_cast<int>(ta ? a.size(0) : a.size(1));
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty sum: C = beta * C, and exactly 0 for beta 0 (C is not read), as on CUDA
    if (c.dtype() == DType::F32) {
      float* p = c.data<float>();
      const float b = static_cast<float>(beta);
      for (int64_t i = 0; i < c.numel(); ++i) p[i] = beta == 0 ? 0.0f : p[i] * b;
    } else {
      double* p = c.data<double>();
      for (int64_t i = 0; i < c.numel(); ++i) p[i] = beta == 0 ? 0.0 : p[i] * beta;
    }
    return;
  }
  const int lda = static_cast<int>(a.size(1)), ldb = static_cast<int>(b.size(1));
  const auto TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
  if (c.dtype() == DType::F32)
    cblas_sgemm(CblasRowMajor, TA, TB, m, n, k, static_cast<float>(alpha), a.data<float>(),
                std::max(lda, 1), b.data<float>(), std::max(ldb, 1), static_cast<float>(beta),
                c.data<float>(), std::max(n, 1));
  else
    cblas_dgemm(CblasRowMajor, TA, TB, m, n, k, alpha, a.data<double>(), std::max(lda, 1),
                b.data<double>(), std::max(ldb, 1), beta, c.data<double>(), std::max(n, 1));
}

void gemm_batched_cpu(bool ta, bool tb, double alpha, const Tensor& a, const Tensor& b,
                      double beta, const Tensor& c) {
  const int64_t batch = c.size(0);
  for (int64_t i = 0; i < batch; ++i)
    gemm_cpu(ta, tb, alpha, a.narrow(0, i, 1).reshape({a.size(1), a.size(2)}),
             b.narrow(0, i, 1).reshape({b.size(1), b.size(2)}), beta,
             c.narrow(0, i, 1).reshape({c.size(1), c.size(2)}));
}

void fill_rows_cpu(const Tensor& bias, const Tensor& out) {
  const int64_t rows = out.size(0), n = out.size(1);
  const size_t bytes = static_cast<size_t>(n) * dtype_size(out.dtype());
  char* o = static_cast<char*>(out.raw_data());
  for (int64_t r = 0; r < rows; ++r) std::memcpy(o + r * bytes, bias.raw_data(), bytes);
}

}  // namespace tdrop
