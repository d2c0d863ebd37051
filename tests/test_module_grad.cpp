// Whole modules against finite differences in double precision: the gradient reaching every
// parameter and the input through residual blocks, attention and zoo models, where each op's own
// check (test_grad.cpp) cannot see a wrong wiring between ops. One table: adding a module is
// adding one entry.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <ostream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "layers/residual.h"
#include "layers/transformer.h"
#include "models/registry.h"
#include "tests/grad_check.h"

namespace tdrop {
namespace {

using testing::fresh_seed;
using testing::random_tensor;

struct ModuleCase {
  std::string name;
  std::function<std::shared_ptr<Module>()> build;
  Shape input;
};

std::shared_ptr<Module> zoo(const std::string& name, nlohmann::json config) {
  return build_model(name, config);
}

std::vector<ModuleCase> cases() {
  return {
      {"basic_block_identity", [] { return std::make_shared<BasicBlock>(4, 4, 1); }, {2, 4, 4, 4}},
      {"basic_block_downsample", [] { return std::make_shared<BasicBlock>(4, 8, 2); }, {3, 4, 5, 5}},
      {"preact_block_projection", [] { return std::make_shared<PreActBlock>(4, 8, 2, true); },
       {3, 4, 5, 5}},
      {"attention", [] { return std::make_shared<MultiHeadSelfAttention>(8, 2); }, {2, 3, 8}},
      {"transformer_block", [] { return std::make_shared<TransformerBlock>(8, 2, 12); }, {2, 3, 8}},
      {"lenet5", [] { return zoo("lenet5", nlohmann::json::object()); }, {2, 1, 28, 28}},
      {"transformer_zoo",
       [] {
         return zoo("transformer", {{"input_shape", {1, 8, 8}}, {"patch", 4}, {"width", 8},
                                    {"heads", 2}, {"depth", 1}});
       },
       {2, 1, 8, 8}},
  };
}

void PrintTo(const ModuleCase& c, std::ostream* os) { *os << c.name; }

class ModuleGradient : public ::testing::TestWithParam<ModuleCase> {};

// d(sum(f(x) * r)) against central differences at up to 24 entries of every parameter and of
// the input. A ReLU or max-pool kink within h of an entry spoils a step size; a first-layer
// weight moves every pre-activation of the batch, so one may lie within 1e-6 and 1e-7 of a kink:
// the best of h, h/10 and h/100 must agree.
TEST_P(ModuleGradient, MatchesFiniteDifferences) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::shared_ptr<Module> m = GetParam().build();
  m->reset_parameters(seed);
  for (auto& [name, p] : m->named_parameters()) p.set_data(p.to(DType::F64));
  for (auto& [name, b] : m->named_buffers()) b.set_data(b.to(DType::F64));
  m->train();  // batch statistics: the gradient flows through them too
  Tensor x = random_tensor(GetParam().input, rng);
  x.set_requires_grad(true);
  const Tensor y = m->forward(x);
  const Tensor r = random_tensor(y.shape(), rng);
  sum(mul(y, r)).backward();
  auto objective = [&] {
    NoGradGuard no_grad;
    return sum(mul(m->forward(x), r)).item();
  };
  std::vector<std::pair<std::string, Tensor>> inputs = m->named_parameters();
  inputs.emplace_back("input", x);
  for (auto& [name, t] : inputs) {
    ASSERT_TRUE(t.grad().defined()) << name << " received no gradient";
    const std::vector<double> analytic = t.grad().to_double_vector();
    double* v = t.data<double>();
    const int64_t stride = std::max<int64_t>(1, t.numel() / 24);
    for (int64_t i = 0; i < t.numel(); i += stride) {
      double best = INFINITY, numeric = 0;
      for (double h : {1e-6, 1e-7, 1e-8}) {
        if (best <= 1e-6 * (1 + std::abs(numeric))) break;  // agreed at a larger step
        const double saved = v[i];
        v[i] = saved + h;
        const double up = objective();
        v[i] = saved - h;
        const double down = objective();
        v[i] = saved;
        const double n = (up - down) / (2 * h);
        if (std::abs(n - analytic[i]) < best) best = std::abs(n - analytic[i]), numeric = n;
      }
      EXPECT_LE(best, 1e-6 * (1 + std::abs(numeric))) << name << " entry " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Modules, ModuleGradient, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace tdrop
