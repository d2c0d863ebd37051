// Finite-difference gradient checking in double precision, shared by every op's test.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/ops.h"
#include "layers/module.h"

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
    // Central differences of step 1e-6 mean nothing in F32: an F32 input is a mistake in the
    // test, not an input to skip.
    ASSERT_EQ(inputs[k].dtype(), DType::F64) << "input " << k << " is not F64";
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

// One training-mode forward and backward of `model`, moved to d, on (x, y): the loss, every
// parameter's gradient and every buffer, to compare a whole model's step across devices.
struct ModelStep {
  Tensor loss;
  std::vector<Tensor> grads, buffers;
};
inline ModelStep model_step_on(Device d, Module& model, const Tensor& x, const Tensor& y) {
  model.to(d);
  model.train();
  ModelStep s;
  s.loss = cross_entropy(model.forward(x.to(d)), y.to(d));
  s.loss.backward();
  for (const Tensor& p : model.parameters()) s.grads.push_back(p.grad());
  for (auto& [name, b] : model.named_buffers()) s.buffers.push_back(b);
  return s;
}

// A whole tensor computed two ways (CPU and CUDA: sums in different orders, ReLUs of values near
// 0 that may fall either way) compared as one vector: ||got - want|| <= rtol ||want|| + 1e-7.
inline void expect_close_l2(const Tensor& want, const Tensor& got, double rtol,
                            const std::string& what) {
  const std::vector<double> a = want.to_double_vector(), b = got.to_double_vector();
  ASSERT_EQ(a.size(), b.size()) << what;
  double diff = 0, norm = 0;
  for (size_t k = 0; k < a.size(); ++k) diff += (a[k] - b[k]) * (a[k] - b[k]), norm += a[k] * a[k];
  EXPECT_LE(std::sqrt(diff), rtol * std::sqrt(norm) + 1e-7) << what;
}

// The forward of the sub-layer of `m` registered as `name`, on x (a test composes a block's
// forward from its parts).
inline Tensor forward_child(Module& m, const std::string& name, const Tensor& x) {
  for (auto& [n, c] : m.children())
    if (n == name) return c->forward(x);
  ADD_FAILURE() << "no child module '" << name << "'";
  throw std::runtime_error("no child module " + name);
}

}  // namespace tdrop::testing
