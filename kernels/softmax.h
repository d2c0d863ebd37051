// Softmax over the last axis (attention weights), forward and backward.
#pragma once
#include <cmath>

#include "core/tensor.h"

namespace tdrop {

// x, y: contiguous [rows, n] float (any leading shape flattened). y = exp(x - max) / sum, with
// the max taken as cross_entropy takes it, so a row of one value gives exactly 1.
void softmax_forward_cpu(const Tensor& x, const Tensor& y);
void softmax_forward_cuda(const Tensor& x, const Tensor& y);
// gx = y * (gy - sum(gy * y)) row by row.
void softmax_backward_cpu(const Tensor& y, const Tensor& gy, const Tensor& gx);
void softmax_backward_cuda(const Tensor& y, const Tensor& gy, const Tensor& gx);

// The CPU reference of one row, shared with cross_entropy: out = softmax(row) over n entries,
// the max starting from row[0]; returns the max and the sum of exp(row - max), from which
// cross-entropy's loss is log(sum) + max - row[label].
template <class T>
struct SoftmaxRowSums {
  T max, sum;
};
template <class T>
SoftmaxRowSums<T> softmax_row_cpu(const T* row, T* out, int64_t n) {
  T mx = row[0];
  for (int64_t j = 1; j < n; ++j) mx = row[j] > mx ? row[j] : mx;
  T sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    out[j] = std::exp(row[j] - mx);
    sum += out[j];
  }
  const T inv = T(1) / sum;
  for (int64_t j = 0; j < n; ++j) out[j] *= inv;
  return {mx, sum};
}

}  // namespace tdrop
