// Strided copy with dtype conversion: the one primitive behind contiguous(), to(dtype) and copy_;
// and fill, behind Tensor::full.
// dst must be contiguous and on the same device as src, with the same number of elements.
#pragma once
#include "core/tensor.h"

namespace tdrop {

// Up to kMaxDims dimensions are supported by every strided kernel in tdrop.
inline constexpr int kMaxDims = 8;

void copy_cast_cpu(const Tensor& src, const Tensor& dst);
void copy_cast_cuda(const Tensor& src, const Tensor& dst);
// Sets every element of the contiguous tensor t to value (cast to its dtype), on its device.
void fill_cpu(const Tensor& t, double value);
void fill_cuda(const Tensor& t, double value);

// Shape and strides packed for a kernel argument.
struct StridedIndex {
  int ndim = 0;
  int64_t shape[kMaxDims];
  int64_t strides[kMaxDims];
};
StridedIndex make_strided_index(const Tensor& t);

}  // namespace tdrop
