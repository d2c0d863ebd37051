// Device helpers of the kernels that give each row a warp (cross-entropy, softmax, layer norm):
// float/double overloads of the math functions, and warp-wide sums and maxima that leave the
// result in every lane.
#pragma once
#include <cuda_runtime.h>

namespace tdrop::warp_row {

constexpr int kWarp = 32;

__device__ __forceinline__ float exp_of(float x) { return expf(x); }
__device__ __forceinline__ double exp_of(double x) { return exp(x); }
__device__ __forceinline__ float log_of(float x) { return logf(x); }
__device__ __forceinline__ double log_of(double x) { return log(x); }
__device__ __forceinline__ float rsqrt_of(float x) { return 1.0f / sqrtf(x); }
__device__ __forceinline__ double rsqrt_of(double x) { return 1.0 / sqrt(x); }

// Max over the warp, with the CPU's rule `m = v > m ? v : m` (a NaN never replaces a number,
// and every lane starts from row[0], so a NaN in column 0 stays NaN exactly as on the CPU).
template <class T>
__device__ __forceinline__ T warp_max_all(T m) {
  for (int off = kWarp / 2; off > 0; off >>= 1) {
    const T o = __shfl_xor_sync(0xffffffffu, m, off);
    m = o > m ? o : m;
  }
  return m;
}

template <class T>
__device__ __forceinline__ T warp_sum_all(T s) {
  for (int off = kWarp / 2; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  return s;
}

// softmax(row) into out, n entries, by the warp (lanes striding over the columns); returns the
// row's max and sum of exponentials in every lane, which cross-entropy's loss needs. The max
// starts from row[0] in every lane, as the CPU's does. No barrier: each lane rescales only the
// entries it wrote.
template <class T>
struct SoftmaxRow {
  T max, sum;
};
template <class T>
__device__ __forceinline__ SoftmaxRow<T> softmax_row(const T* row, T* out, int64_t n, int lane) {
  T mx = row[0];
  for (int64_t j = lane; j < n; j += kWarp) mx = row[j] > mx ? row[j] : mx;
  mx = warp_max_all(mx);
  T sum = 0;
  for (int64_t j = lane; j < n; j += kWarp) {
    const T e = exp_of(row[j] - mx);
    out[j] = e;
    sum += e;
  }
  sum = warp_sum_all(sum);
  const T inv = T(1) / sum;
  for (int64_t j = lane; j < n; j += kWarp) out[j] *= inv;
  return {mx, sum};
}

}  // namespace tdrop::warp_row
