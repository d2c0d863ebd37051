#include "kernels/reduce.h"

#include <cmath>

#include "core/copy.h"

namespace tdrop {

namespace {

template <class T>
void sum_typed(const Tensor& x, const std::vector<bool>& reduce, const Tensor& out) {
  // Walk x in order; each element lands in the output slot with reduced coordinates zeroed.
  const int nd = static_cast<int>(x.dim());
  const StridedIndex xi = make_strided_index(x);
  int64_t ostride[kMaxDims];
  const Shape ost = out.strides();
  for (int d = 0; d < nd; ++d) ostride[d] = reduce[d] ? 0 : ost[d];
  std::vector<double> acc(static_cast<size_t>(out.numel()), 0.0);
  const T* px = static_cast<const T*>(x.raw_data());
  const int64_t n = x.numel();
  int64_t idx[kMaxDims] = {0};
  int64_t ox = 0, oo = 0;
  for (int64_t i = 0; i < n; ++i) {
    acc[oo] += static_cast<double>(px[ox]);
    for (int d = nd - 1; d >= 0; --d) {
      ox += xi.strides[d];
      oo += ostride[d];
      if (++idx[d] < xi.shape[d]) break;
      ox -= xi.strides[d] * xi.shape[d];
      oo -= ostride[d] * xi.shape[d];
      idx[d] = 0;
    }
  }
  T* po = static_cast<T*>(out.raw_data());
  for (size_t i = 0; i < acc.size(); ++i) po[i] = static_cast<T>(acc[i]);
}

template <class T>
void argmax_typed(const Tensor& x, const Tensor& out) {
  const int64_t rows = x.size(0), cols = x.size(1);
  const T* p = static_cast<const T*>(x.raw_data());
  int64_t* o = out.data<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = p + r * cols;
    int64_t best = 0;
    for (int64_t c = 1; c < cols; ++c) {
      if (std::isnan(row[best])) break;
      if (row[c] > row[best] || std::isnan(row[c])) best = c;
    }
    o[r] = best;
  }
}

}  // namespace

void sum_axes_cpu(const Tensor& x, const std::vector<bool>& reduce, const Tensor& out) {
  if (x.dtype() == DType::F32) sum_typed<float>(x, reduce, out);
  else if (x.dtype() == DType::F64) sum_typed<double>(x, reduce, out);
  else fail("sum: unsupported dtype ", dtype_name(x.dtype()));
}

void argmax_rows_cpu(const Tensor& x, const Tensor& out) {
  if (x.dtype() == DType::F32) argmax_typed<float>(x, out);
  else if (x.dtype() == DType::F64) argmax_typed<double>(x, out);
  else fail("argmax: unsupported dtype ", dtype_name(x.dtype()));
}

}  // namespace tdrop
