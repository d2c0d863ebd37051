// Finite-difference gradient checking in double precision, shared by every op's test.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <vector>

#include "kernels/ops.h"

namespace tdrop::testing {

// A fresh seed per run, printed on failure so a failing draw can be replayed.
inline uint64_t fresh_seed() {
  static const uint64_t base = std::random_device{}();
  static uint64_t counter = 0;
  return base + 7919 * counter++;
}

// Uniform values in [lo, hi) of the given dtype on the CPU.
inline Tensor random_tensor(const Shape& shape, std::mt19937_64& rng, double lo = -1.0,
                            double hi = 1.0, DType dtype = DType::F64) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (double& x : v) x = dist(rng);
  return Tensor::from_vector(v, shape).to(dtype);
}

// Checks d(sum(f(inputs) * r))/d(input) from backward() against central differences, where r
// is a fixed random projection (so every output element contributes with its own weight).
inline void check_gradients(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                            std::vector<Tensor> inputs, std::mt19937_64& rng,
                            double tolerance = 1e-6) {
  for (Tensor& t : inputs) t.set_requires_grad(true);
  Tensor y = f(inputs);
  const Tensor r = random_tensor(y.shape(), rng);
  Tensor loss = sum(mul(y, r));
  loss.backward();
  auto scalar = [&](const std::vector<Tensor>& in) {
    NoGradGuard ng;
    return sum(mul(f(in), r)).item();
  };
  for (size_t k = 0; k < inputs.size(); ++k) {
    if (inputs[k].dtype() != DType::F64) continue;
    ASSERT_TRUE(inputs[k].grad().defined()) << "input " << k << " received no gradient";
    const std::vector<double> analytic = inputs[k].grad().to_double_vector();
    ASSERT_EQ(analytic.size(), static_cast<size_t>(inputs[k].numel()));
    double* x = inputs[k].data<double>();
    for (int64_t i = 0; i < inputs[k].numel(); ++i) {
      const double h = 1e-6, saved = x[i];
      x[i] = saved + h;
      const double up = scalar(inputs);
      x[i] = saved - h;
      const double down = scalar(inputs);
      x[i] = saved;
      const double numeric = (up - down) / (2 * h);
      EXPECT_NEAR(analytic[i], numeric, tolerance * (1 + std::abs(numeric)))
          << "input " << k << " element " << i;
    }
  }
}

}  // namespace tdrop::testing
