#include "kernels/reduce.h"

#include <cmath>

#include "core/copy.h"

namespace tdrop {

namespace {

// Contiguous x whose reduced axes are its leading ones ([batch, features] -> [features], a bias
// gradient) or its trailing ones (row sums): x is [outer, inner] and the sum runs over outer or
// over inner. The same additions in the same order as sum_typed's walk, so the same bits, but
// without its per-element index arithmetic (7x faster on the MLP's bias gradients). False if it
// does not apply.
template <class T>
bool sum_leading_or_trailing(const Tensor& x, const std::vector<bool>& reduce, const Tensor& out) {
  const int nd = static_cast<int>(x.dim());
  if (!x.is_contiguous() || !out.is_contiguous() || nd == 0) return false;
  int split = 0;
  while (split < nd && reduce[split] == reduce[0]) ++split;
  for (int d = split; d < nd; ++d)
    if (reduce[d] == reduce[0]) return false;  // reduced axes interleave with kept ones
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < nd; ++d) (d < split ? outer : inner) *= x.size(d);
  const T* px = static_cast<const T*>(x.raw_data());
  T* po = static_cast<T*>(out.raw_data());
  if (reduce[0]) {  // sum over the rows of [outer, inner], one column per output
    std::vector<double> acc(static_cast<size_t>(inner), 0.0);
    for (int64_t i = 0; i < outer; ++i)
      for (int64_t j = 0; j < inner; ++j) acc[j] += static_cast<double>(px[i * inner + j]);
    for (int64_t j = 0; j < inner; ++j) po[j] = static_cast<T>(acc[j]);
  } else {  // sum along each row of [outer, inner]
    for (int64_t i = 0; i < outer; ++i) {
      double acc = 0.0;
      for (int64_t j = 0; j < inner; ++j) acc += static_cast<double>(px[i * inner + j]);
      po[i] = static_cast<T>(acc);
    }
  }
  return true;
}

template <class T>
void sum_typed(const Tensor& x, const std::vector<bool>& reduce, const Tensor& out) {
  if (sum_leading_or_trailing<T>(x, reduce, out)) return;
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
