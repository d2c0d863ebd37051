// Strided copy with dtype conversion: the one primitive behind contiguous(), to(dtype) and copy_;
// and fill, behind Tensor::full.
// dst must be contiguous and on the same device as src, with the same number of elements.
#pragma once
#include <limits>
#include <type_traits>

#include "core/host_device.h"
#include "core/tensor.h"

namespace tdrop {

// One element converted to dtype D, the same on the CPU and in CUDA kernels. A float going to an
// integer type rounds toward zero and saturates at the type's range, and NaN gives 0 (as CUDA's
// conversion instructions do; a plain C++ cast of such a value is undefined behaviour).
template <class D, class S>
TDROP_HD D convert_element(S x) {
  if constexpr (std::is_floating_point_v<S> && std::is_integral_v<D>) {
    if (!(x == x)) return D(0);
    // Both bounds are exact doubles (2^63 for int64's max, one past it, which is why >=).
    constexpr double lo = static_cast<double>(std::numeric_limits<D>::lowest());
    constexpr double hi = static_cast<double>(std::numeric_limits<D>::max());
    if (x <= lo) return std::numeric_limits<D>::lowest();
    if (x >= hi) return std::numeric_limits<D>::max();
  }
  return static_cast<D>(x);
}

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
