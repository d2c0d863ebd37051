#include "kernels/elementwise.h"

#include <algorithm>
#include <cmath>

namespace tdrop {

const char* binary_op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
    case BinaryOp::Div: return "div";
    case BinaryOp::ReluGrad: return "relu_backward";
  }
  return "?";
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    TDROP_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ",
                shape_str(b), " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

StridedIndex broadcast_index(const Tensor& t, const Shape& out_shape) {
  TDROP_CHECK(out_shape.size() <= static_cast<size_t>(kMaxDims), "broadcast: more than ", kMaxDims,
              " dims in ", shape_str(out_shape));
  StridedIndex s;
  s.ndim = static_cast<int>(out_shape.size());
  const size_t lead = out_shape.size() - t.shape().size();
  for (size_t i = 0; i < out_shape.size(); ++i) {
    s.shape[i] = out_shape[i];
    s.strides[i] = (i < lead || t.shape()[i - lead] == 1) ? 0 : t.strides()[i - lead];
  }
  return s;
}

namespace {

template <class T>
inline T apply(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::ReluGrad: return b <= T(0) ? T(0) : a;  // NaN passes, as in PyTorch
  }
  return T(0);
}

template <class T, BinaryOp OP>
void binary_loop(const T* a, const StridedIndex& ia, const T* b, const StridedIndex& ib, T* out,
                 int64_t n, bool same_contiguous) {
  if (same_contiguous) {
    for (int64_t i = 0; i < n; ++i) out[i] = apply(OP, a[i], b[i]);
    return;
  }
  const int nd = ia.ndim;
  if (nd == 0) {
    if (n) out[0] = apply(OP, a[0], b[0]);
    return;
  }
  // Innermost dimension as a tight loop, outer dimensions by odometer.
  const int64_t inner = ia.shape[nd - 1], sa = ia.strides[nd - 1], sb = ib.strides[nd - 1];
  int64_t idx[kMaxDims] = {0};
  int64_t oa = 0, ob = 0;
  for (int64_t base = 0; base < n; base += inner) {
    for (int64_t j = 0; j < inner; ++j) out[base + j] = apply(OP, a[oa + j * sa], b[ob + j * sb]);
    for (int d = nd - 2; d >= 0; --d) {
      oa += ia.strides[d];
      ob += ib.strides[d];
      if (++idx[d] < ia.shape[d]) break;
      oa -= ia.strides[d] * ia.shape[d];
      ob -= ib.strides[d] * ib.shape[d];
      idx[d] = 0;
    }
  }
}

template <class T>
void binary_typed(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  const StridedIndex ia = broadcast_index(a, out.shape()), ib = broadcast_index(b, out.shape());
  const bool fast = a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous();
  const T *pa = static_cast<const T*>(a.raw_data()), *pb = static_cast<const T*>(b.raw_data());
  T* po = static_cast<T*>(out.raw_data());
  const int64_t n = out.numel();
  if (n == 0) return;
  switch (op) {
    case BinaryOp::Add: return binary_loop<T, BinaryOp::Add>(pa, ia, pb, ib, po, n, fast);
    case BinaryOp::Sub: return binary_loop<T, BinaryOp::Sub>(pa, ia, pb, ib, po, n, fast);
    case BinaryOp::Mul: return binary_loop<T, BinaryOp::Mul>(pa, ia, pb, ib, po, n, fast);
    case BinaryOp::Div: return binary_loop<T, BinaryOp::Div>(pa, ia, pb, ib, po, n, fast);
    case BinaryOp::ReluGrad: return binary_loop<T, BinaryOp::ReluGrad>(pa, ia, pb, ib, po, n, fast);
  }
}

template <class T>
void unary_typed(UnaryOp op, const Tensor& a_in, double alpha, double beta, const Tensor& out) {
  const Tensor a = a_in.contiguous();
  const T* pa = static_cast<const T*>(a.raw_data());
  T* po = static_cast<T*>(out.raw_data());
  const int64_t n = a.numel();
  const T al = static_cast<T>(alpha), be = static_cast<T>(beta);
  switch (op) {
    case UnaryOp::Relu:
      for (int64_t i = 0; i < n; ++i) po[i] = pa[i] <= T(0) ? T(0) : pa[i];  // NaN stays NaN
      break;
    case UnaryOp::Affine:
      for (int64_t i = 0; i < n; ++i) po[i] = pa[i] * al + be;
      break;
    case UnaryOp::Abs:
      for (int64_t i = 0; i < n; ++i) po[i] = std::fabs(pa[i]);
      break;
    case UnaryOp::Sign:
      for (int64_t i = 0; i < n; ++i) po[i] = pa[i] > T(0) ? al : pa[i] < T(0) ? -al : T(0);
      break;
  }
}

}  // namespace

void binary_cpu(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  switch (out.dtype()) {
    case DType::F32: return binary_typed<float>(op, a, b, out);
    case DType::F64: return binary_typed<double>(op, a, b, out);
    default: fail(binary_op_name(op), ": unsupported dtype ", dtype_name(out.dtype()));
  }
}

void unary_cpu(UnaryOp op, const Tensor& a, double alpha, double beta, const Tensor& out) {
  switch (out.dtype()) {
    case DType::F32: return unary_typed<float>(op, a, alpha, beta, out);
    case DType::F64: return unary_typed<double>(op, a, alpha, beta, out);
    default: fail("unary op: unsupported dtype ", dtype_name(out.dtype()));
  }
}

void axpy_cpu(double alpha, const Tensor& x, const Tensor& acc) {
  const int64_t n = x.numel();
  if (acc.dtype() == DType::F32) {
    const float* px = x.data<float>();
    float* pa = acc.data<float>();
    const float al = static_cast<float>(alpha);
    for (int64_t i = 0; i < n; ++i) pa[i] += al * px[i];
  } else {
    const double* px = x.data<double>();
    double* pa = acc.data<double>();
    for (int64_t i = 0; i < n; ++i) pa[i] += alpha * px[i];
  }
}

int64_t first_nonfinite_cpu(const Tensor& x_in) {
  const Tensor x = x_in.contiguous();
  const int64_t n = x.numel();
  if (x.dtype() == DType::F32) {
    const float* p = x.data<float>();
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) return i;
  } else if (x.dtype() == DType::F64) {
    const double* p = x.data<double>();
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) return i;
  }
  return -1;
}

}  // namespace tdrop
