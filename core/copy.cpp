#include "core/copy.h"

#include <algorithm>

namespace tdrop {

StridedIndex make_strided_index(const Tensor& t) {
  TDROP_CHECK(t.dim() <= kMaxDims, "tensors of more than ", kMaxDims, " dims are not supported: ",
              t.describe());
  StridedIndex s;
  s.ndim = static_cast<int>(t.dim());
  for (int i = 0; i < s.ndim; ++i) {
    s.shape[i] = t.shape()[i];
    s.strides[i] = t.strides()[i];
  }
  return s;
}

namespace {

template <class S, class D>
void copy_typed(const S* src, const StridedIndex& si, D* dst, int64_t n, bool contiguous) {
  if (contiguous) {
    for (int64_t i = 0; i < n; ++i) dst[i] = convert_element<D>(src[i]);
    return;
  }
  // Row by row along the innermost dim, whose elements are `step` apart (1 for views that keep
  // rows whole: a narrowed or head-split tensor), so the inner loop is a plain (vectorised) copy
  // and the odometer over the outer dims moves once per row.
  const int last = si.ndim - 1;
  const int64_t inner = si.shape[last], step = si.strides[last];
  int64_t idx[kMaxDims] = {0};
  int64_t off = 0;
  for (int64_t i = 0; i < n; i += inner) {
    const S* row = src + off;
    D* out = dst + i;
    if (step == 1) {
      for (int64_t j = 0; j < inner; ++j) out[j] = convert_element<D>(row[j]);
    } else {
      for (int64_t j = 0; j < inner; ++j) out[j] = convert_element<D>(row[j * step]);
    }
    for (int d = last - 1; d >= 0; --d) {  // odometer increment over the outer dims
      off += si.strides[d];
      if (++idx[d] < si.shape[d]) break;
      off -= si.strides[d] * si.shape[d];
      idx[d] = 0;
    }
  }
}

template <class S>
void copy_from(const Tensor& src, const Tensor& dst) {
  const S* s = static_cast<const S*>(src.raw_data());
  const StridedIndex si = make_strided_index(src);
  const bool c = src.is_contiguous();
  const int64_t n = src.numel();
  switch (dst.dtype()) {
    case DType::F32: return copy_typed(s, si, dst.data<float>(), n, c);
    case DType::F64: return copy_typed(s, si, dst.data<double>(), n, c);
    case DType::I64: return copy_typed(s, si, dst.data<int64_t>(), n, c);
    case DType::U8: return copy_typed(s, si, dst.data<uint8_t>(), n, c);
  }
}

}  // namespace

void copy_cast_cpu(const Tensor& src, const Tensor& dst) {
  switch (src.dtype()) {
    case DType::F32: return copy_from<float>(src, dst);
    case DType::F64: return copy_from<double>(src, dst);
    case DType::I64: return copy_from<int64_t>(src, dst);
    case DType::U8: return copy_from<uint8_t>(src, dst);
  }
}

void fill_cpu(const Tensor& t, double value) {
  const int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::F32: std::fill_n(t.data<float>(), n, convert_element<float>(value)); break;
    case DType::F64: std::fill_n(t.data<double>(), n, value); break;
    case DType::I64: std::fill_n(t.data<int64_t>(), n, convert_element<int64_t>(value)); break;
    case DType::U8: std::fill_n(t.data<uint8_t>(), n, convert_element<uint8_t>(value)); break;
  }
}

}  // namespace tdrop
