#include "kernels/cross_entropy.h"

#include <cmath>

#include "kernels/softmax.h"

namespace tdrop {

namespace {

template <class T>
void forward_typed(const Tensor& logits, const Tensor& labels, const Tensor& losses,
                   const Tensor& probs) {
  const int64_t n = logits.size(0), c = logits.size(1);
  const T* x = static_cast<const T*>(logits.raw_data());
  const int64_t* y = labels.data<int64_t>();
  T* loss = static_cast<T*>(losses.raw_data());
  T* p = static_cast<T*>(probs.raw_data());
  for (int64_t r = 0; r < n; ++r) {
    if (y[r] < 0 || y[r] >= c) fail(cross_entropy_label_error(y[r], r, logits.shape()));
    const T* row = x + r * c;
    const SoftmaxRowSums<T> s = softmax_row_cpu(row, p + r * c, c);
    // max - x[label] first: exact when they are equal, so log(sum) is not rounded against a
    // large max and lost (logits of 1e8 gave a loss of 0 instead of ln 2).
    loss[r] = (s.max - row[y[r]]) + std::log(s.sum);
  }
}

template <class T>
void backward_typed(const Tensor& probs, const Tensor& labels, double scale, const Tensor& g) {
  const int64_t n = probs.size(0), c = probs.size(1);
  const T* p = static_cast<const T*>(probs.raw_data());
  const int64_t* y = labels.data<int64_t>();
  T* o = static_cast<T*>(g.raw_data());
  const T s = static_cast<T>(scale);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < c; ++j)
      o[r * c + j] = (p[r * c + j] - (j == y[r] ? T(1) : T(0))) * s;
}

}  // namespace

std::string cross_entropy_label_error(int64_t label, int64_t row, const Shape& logits) {
  return "cross_entropy: label " + std::to_string(label) + " at row " + std::to_string(row) +
         " is outside [0, " + std::to_string(logits.size() > 1 ? logits[1] : 0) +
         ") for logits " + shape_str(logits);
}

void cross_entropy_forward_cpu(const Tensor& logits, const Tensor& labels, const Tensor& losses,
                               const Tensor& probs) {
  if (logits.dtype() == DType::F32) forward_typed<float>(logits, labels, losses, probs);
  else forward_typed<double>(logits, labels, losses, probs);
}

void cross_entropy_backward_cpu(const Tensor& probs, const Tensor& labels, double scale,
                                const Tensor& grad_logits) {
  if (probs.dtype() == DType::F32) backward_typed<float>(probs, labels, scale, grad_logits);
  else backward_typed<double>(probs, labels, scale, grad_logits);
}

}  // namespace tdrop
