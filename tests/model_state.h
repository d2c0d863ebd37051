// Models whose buffers (BatchNorm's running statistics) hold state, for the tests that save
// and load a model: checkpoints (test_training.cpp) and resume files (test_resume.cpp).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/autograd.h"
#include "layers/module.h"
#include "models/registry.h"

namespace tdrop::testing {

// resnet20 (its default input, [1, 32, 32]) after one training-mode forward, which moves the
// statistics off their initial 0 and 1; `cfg` is the model config as build_model completed it.
inline std::shared_ptr<Module> resnet20_with_moved_statistics(uint64_t seed,
                                                              nlohmann::json& cfg) {
  cfg = nlohmann::json::object();
  auto model = build_model("resnet20", cfg);
  model->reset_parameters(seed);
  NoGradGuard ng;
  model->train();
  std::vector<float> x(4 * 32 * 32);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i + seed));
  model->forward(Tensor::from_vector(x, {4, 1, 32, 32}));
  return model;
}

// The same buffers, by name and bit for bit.
inline void expect_same_buffers(const Module& a, const Module& b) {
  const auto x = a.named_buffers(), y = b.named_buffers();
  ASSERT_EQ(x.size(), y.size());
  ASSERT_GT(x.size(), 0u);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(x[i].first, y[i].first);
    EXPECT_EQ(x[i].second.to_vector<float>(), y[i].second.to_vector<float>()) << x[i].first;
  }
}

}  // namespace tdrop::testing
