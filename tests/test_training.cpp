// Training machinery: optimizers against PyTorch's update formulas, LR schedules, Linear
// initialisation, checkpoints (round trip, clear errors, atomic writes), the batch loader, and
// an end-to-end run of train() on real Fashion-MNIST with its run directory.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/temp_dir.h"
#include "core/atomic_file.h"
#include "core/device.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "data/datasets.h"
#include "data/loader.h"
#include "kernels/ops.h"
#include "kernels/targeted_dropout.h"
#include "layers/init.h"
#include "layers/linear.h"
#include "layers/lr_schedule.h"
#include "layers/optimizer.h"
#include "layers/sequential.h"
#include "models/checkpoint.h"
#include "models/progress.h"
#include "models/registry.h"
#include "models/trainer.h"
#include "tests/expect_error.h"
#include "tests/grad_check.h"
#include "tests/model_state.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace tdrop {
namespace {

using testing::fresh_seed;

using testing::error_message;
using testing::expect_error;

using ::tdrop::testing::TempDir;

std::vector<float> random_floats(size_t n, std::mt19937_64& rng, float lo = -1, float hi = 1) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// An error raised inside a layer's forward names the layer's path in the model, also when it
// comes from deep inside an op (running out of memory); outside any layer nothing is added.
TEST(LayerErrors, NameTheLayerPath) {
  Sequential model;
  model.add(std::make_shared<Linear>(4, 3));
  model.add(std::make_shared<ReLU>());
  model.add(std::make_shared<Linear>(5, 2));
  expect_error([&] { model.forward(Tensor::zeros({2, 4})); },
               {"Linear(5 -> 2)", "[2, 3]", "(in layer '2')"});
  // An output of 2^41 floats is more than any machine's RAM: refused naming the layer.
  Sequential huge;
  huge.add(std::make_shared<ReLU>());
  huge.add(std::make_shared<Linear>(1, int64_t{1} << 20, false));
  expect_error([&] { huge.forward(Tensor::zeros({int64_t{1} << 21, 1})); },
               {"out of host memory", "(in layer '1')"});
  const std::string outside = error_message([] { td_count(1.5, 10); });
  EXPECT_EQ(outside.find("in layer"), std::string::npos) << outside;
}

// An error in the backward pass names the layer whose forward recorded the op: with anomaly
// detection, a NaN gradient arriving at the last Linear is reported there, and the scope
// closes with the pass.
TEST(LayerErrors, BackwardNamesTheLayer) {
  Sequential model;
  model.add(std::make_shared<Linear>(4, 3));
  model.add(std::make_shared<ReLU>());
  model.add(std::make_shared<Linear>(3, 2));
  const Tensor out = model.forward(Tensor::full({2, 4}, 0.5));
  EXPECT_EQ(current_layer(), "");
  std::vector<float> seed(4, 1.0f);
  seed[3] = std::nanf("");
  set_anomaly_detection(true);
  const std::string msg =
      error_message([&] { out.backward(Tensor::from_vector(seed, {2, 2})); });
  set_anomaly_detection(false);
  EXPECT_NE(msg.find("anomaly: the gradient of "), std::string::npos) << msg;
  EXPECT_NE(msg.find("(in the backward pass of layer '2')"), std::string::npos) << msg;
  EXPECT_EQ(layer_context(), "");
  // The same graph's nodes remember their layers: a clean backward reaches layer 0's weight.
  out.backward(Tensor::full({2, 2}, 1.0));
  EXPECT_TRUE(model.parameters()[0].grad().defined());
}

// Paths are the parameter-name prefixes, however the tree was built (resnet20's blocks are
// built before their stage registers them).
TEST(LayerErrors, PathsFollowTheModelTree) {
  json cfg = json::object();
  const std::shared_ptr<Module> model = build_model("resnet20", cfg);
  EXPECT_EQ(model->path(), "");
  int checked = 0;
  std::function<void(const Module&)> walk = [&](const Module& m) {
    for (const auto& [name, child] : m.children()) {
      EXPECT_EQ(child->path(), m.path().empty() ? name : m.path() + "." + name);
      ++checked;
      walk(*child);
    }
  };
  walk(*model);
  EXPECT_GT(checked, 20);
  std::set<std::string> params;
  for (const auto& [name, t] : model->named_parameters()) params.insert(name);
  std::function<void(const Module&)> owners = [&](const Module& m) {
    for (const auto& [name, t] : m.own_parameters())
      EXPECT_TRUE(params.count(m.path() + "." + name)) << m.path() << "." << name;
    for (const auto& [name, child] : m.children()) owners(*child);
  };
  for (const auto& [name, child] : model->children()) owners(*child);
}

// ---------------------------------------------------------------------------------------------
// Optimizers: a few steps each, against PyTorch's formulas evaluated in double precision
// ---------------------------------------------------------------------------------------------

// torch.optim.SGD (dampening 0): d = g + wd*w; buf = d on the first step, else m*buf + d;
// d = nesterov ? d + m*buf : buf; w -= lr*d.
struct SgdReference {
  SgdReference(double lr_, double momentum_, double wd_, bool nesterov_)
      : lr(lr_), momentum(momentum_), wd(wd_), nesterov(nesterov_) {}
  double lr, momentum, wd;
  bool nesterov;
  std::vector<double> buf;
  bool has_buf = false;
  void step(std::vector<double>& w, const std::vector<float>& g) {
    if (buf.empty()) buf.assign(w.size(), 0.0);
    for (size_t i = 0; i < w.size(); ++i) {
      double d = g[i] + wd * w[i];
      if (momentum != 0) {
        buf[i] = has_buf ? momentum * buf[i] + d : d;
        d = nesterov ? d + momentum * buf[i] : buf[i];
      }
      w[i] -= lr * d;
    }
    has_buf = true;
  }
};

// torch.optim.Adam / AdamW: Adam adds wd*w to the gradient, AdamW first scales w by (1-lr*wd);
// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; w -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps).
struct AdamReference {
  AdamReference(double lr_, double wd_, bool decoupled_) : lr(lr_), wd(wd_), decoupled(decoupled_) {}
  // The hyper-parameters as tdrop stores them (float), so only the formula is compared.
  double lr, wd, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  bool decoupled;
  std::vector<double> m, v;
  int t = 0;
  void step(std::vector<double>& w, const std::vector<float>& g) {
    if (m.empty()) {
      m.assign(w.size(), 0.0);
      v.assign(w.size(), 0.0);
    }
    ++t;
    for (size_t i = 0; i < w.size(); ++i) {
      double gi = g[i];
      if (decoupled) w[i] *= 1 - lr * wd;
      else gi += wd * w[i];
      m[i] = b1 * m[i] + (1 - b1) * gi;
      v[i] = b2 * v[i] + (1 - b2) * gi * gi;
      const double mh = m[i] / (1 - std::pow(b1, t)), vh = v[i] / (1 - std::pow(b2, t));
      w[i] -= lr * mh / (std::sqrt(vh) + eps);
    }
  }
};

// Weights are O(1) and float32 rounding accumulates over a few steps, so the tolerance is
// absolute at that scale: 1e-5 is far below any formula difference (a missed weight-decay term,
// momentum or bias correction moves weights by 1e-4 or more within these steps).
void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-5 * (1 + std::abs(want[i]))) << what << " element " << i;
}

struct SgdCase {
  const char* name;
  float lr, momentum, wd;
  bool nesterov;
};


void PrintTo(const SgdCase& c, std::ostream* os) { *os << c.name; }

class SgdMatchesPyTorch : public ::testing::TestWithParam<SgdCase> {};

TEST_P(SgdMatchesPyTorch, FiveSteps) {
  const SgdCase c = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  // Two parameters; the second gets no gradient on step 2 and must then be left alone.
  std::vector<float> w0 = random_floats(12, rng), w1 = random_floats(5, rng);
  Tensor p0 = Tensor::from_vector(w0, {3, 4}), p1 = Tensor::from_vector(w1, {5});
  p0.set_requires_grad(true);
  p1.set_requires_grad(true);
  // Through the factory the CLI uses, so that --optimizer nesterov is the one tested.
  const auto opt = make_optimizer(c.nesterov ? "nesterov" : "sgd", {p0, p1}, c.lr, c.momentum,
                                  c.wd);
  SgdReference r0(c.lr, c.momentum, c.wd, c.nesterov), r1 = r0;
  std::vector<double> e0(w0.begin(), w0.end()), e1(w1.begin(), w1.end());
  for (int step = 0; step < 5; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    if (step == 3) {  // the schedule changes the rate between steps
      opt->set_lr(c.lr * 0.5f);
      r0.lr = r1.lr = c.lr * 0.5f;
    }
    const std::vector<float> g0 = random_floats(12, rng), g1 = random_floats(5, rng);
    opt->zero_grad();
    p0.set_grad(Tensor::from_vector(g0, {3, 4}));
    r0.step(e0, g0);
    if (step != 2) {
      p1.set_grad(Tensor::from_vector(g1, {5}));
      r1.step(e1, g1);
    }
    opt->step();
    expect_close(p0.to_double_vector(), e0, "param 0");
    expect_close(p1.to_double_vector(), e1, "param 1");
  }
  EXPECT_EQ(opt->steps_taken(), 5);
}

INSTANTIATE_TEST_SUITE_P(Optimizer, SgdMatchesPyTorch,
                         ::testing::Values(SgdCase{"plain", 0.1f, 0.0f, 0.0f, false},
                                           SgdCase{"momentum", 0.05f, 0.9f, 0.0f, false},
                                           SgdCase{"nesterov", 0.05f, 0.9f, 0.0f, true},
                                           SgdCase{"weight_decay", 0.1f, 0.0f, 0.01f, false},
                                           SgdCase{"momentum_wd", 0.05f, 0.9f, 5e-4f, false},
                                           SgdCase{"nesterov_wd", 0.02f, 0.5f, 0.1f, true}),
                         [](const auto& info) { return std::string(info.param.name); });

struct AdamCase {
  const char* name;
  float lr, wd;
  bool decoupled;
};


void PrintTo(const AdamCase& c, std::ostream* os) { *os << c.name; }

class AdamMatchesPyTorch : public ::testing::TestWithParam<AdamCase> {};

TEST_P(AdamMatchesPyTorch, SixSteps) {
  const AdamCase c = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<float> w = random_floats(20, rng), w1 = random_floats(3, rng);
  Tensor p = Tensor::from_vector(w, {4, 5}), p1 = Tensor::from_vector(w1, {3});
  p.set_requires_grad(true);
  p1.set_requires_grad(true);
  auto opt = make_optimizer(c.decoupled ? "adamw" : "adam", {p, p1}, c.lr, 0.0f, c.wd);
  AdamReference ref(c.lr, c.wd, c.decoupled), ref1 = ref;
  std::vector<double> expect(w.begin(), w.end()), expect1(w1.begin(), w1.end());
  for (int step = 0; step < 6; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    // Gradients of very different scales per element: Adam's normalisation must handle both.
    std::vector<float> g = random_floats(20, rng), g1 = random_floats(3, rng);
    for (size_t i = 0; i < g.size(); i += 3) g[i] *= 1e-3f;
    opt->zero_grad();
    p.set_grad(Tensor::from_vector(g, {4, 5}));
    ref.step(expect, g);
    // The second parameter has no gradient on steps 0 and 3: it is left alone, and its bias
    // correction counts only its own steps (PyTorch's per-parameter step).
    if (step != 0 && step != 3) {
      p1.set_grad(Tensor::from_vector(g1, {3}));
      ref1.step(expect1, g1);
    }
    opt->step();
    expect_close(p.to_double_vector(), expect, "param");
    expect_close(p1.to_double_vector(), expect1, "param 1");
  }
}

// A resume point restores each parameter's own step count; one written before the counts
// existed restores the global count (every parameter had stepped each time).
TEST(Optimizer, AdamStateRestoresPerParameterSteps) {
  Tensor a = Tensor::from_vector<float>({1.0f}, {1}), b = Tensor::from_vector<float>({1.0f}, {1});
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  Adam opt({a, b}, 0.01f);
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad();
    a.set_grad(Tensor::from_vector<float>({0.5f}, {1}));
    if (step == 2) b.set_grad(Tensor::from_vector<float>({0.5f}, {1}));
    opt.step();
  }
  std::map<std::string, Tensor> saved;
  for (auto& [name, t] : opt.state()) saved[name] = t.clone();
  EXPECT_EQ(saved.at("skipped").to_vector<float>(), (std::vector<float>{0, 2}));
  Adam restored({a.clone(), b.clone()}, 0.01f);
  restored.load_state(saved, 3, "resume.safetensors");
  std::map<std::string, Tensor> again;
  for (auto& [name, t] : restored.state()) again[name] = t;
  EXPECT_EQ(again.at("skipped").to_vector<float>(), (std::vector<float>{0, 2}));
  saved.at("skipped") = Tensor::from_vector<float>({0, 4}, {2});
  expect_error([&] { restored.load_state(saved, 3, "resume.safetensors"); },
               {"resume.safetensors", "'skipped' of parameter 1 is 4", "3 steps"});
  saved.at("skipped") = Tensor::from_vector<float>({0, 1.5f}, {2});  // not a whole step count
  expect_error([&] { restored.load_state(saved, 3, "resume.safetensors"); },
               {"resume.safetensors", "'skipped' of parameter 1 is 1.5"});
  saved.erase("skipped");
  Adam old_file({a.clone(), b.clone()}, 0.01f);
  old_file.load_state(saved, 3, "resume.safetensors");
  for (auto& [name, t] : old_file.state()) {
    if (name == "skipped") {
      EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{0, 0}));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Optimizer, AdamMatchesPyTorch,
                         ::testing::Values(AdamCase{"adam", 1e-2f, 0.0f, false},
                                           AdamCase{"adam_l2", 1e-2f, 0.1f, false},
                                           AdamCase{"adamw", 1e-2f, 0.1f, true},
                                           AdamCase{"adamw_big_lr", 0.3f, 0.05f, true}),
                         [](const auto& info) { return std::string(info.param.name); });

// A saved state that does not fit the parameters is an error naming the entry, before anything
// is copied.
TEST(Optimizer, LoadStateNamesAMissingOrMisshapenEntry) {
  SGD opt({Tensor::zeros({2, 3})}, 0.1f, 0.9f);
  std::map<std::string, Tensor> saved{{"momentum.0", Tensor::zeros({3, 2})}};
  expect_error([&] { opt.load_state(saved, 1, "resume.safetensors"); },
               {"resume.safetensors: optimizer state 'momentum.0' has shape [3, 2], expected [2, 3]"});
  saved.clear();
  expect_error([&] { opt.load_state(saved, 1, "resume.safetensors"); },
               {"resume.safetensors: optimizer state 'momentum.0' is missing"});
}

TEST(Optimizer, FirstAdamStepMovesEachWeightByTheLearningRate) {
  Tensor p = Tensor::from_vector<float>({1.0f, -2.0f, 3.0f}, {3});
  p.set_requires_grad(true);
  Adam opt({p}, 0.01f);
  p.set_grad(Tensor::from_vector<float>({0.5f, -1e-3f, 40.0f}, {3}));
  opt.step();
  const std::vector<float> w = p.to_vector<float>();
  EXPECT_NEAR(w[0], 0.99f, 1e-6);
  EXPECT_NEAR(w[1], -1.99f, 1e-5);
  EXPECT_NEAR(w[2], 2.99f, 1e-6);
}

TEST(Optimizer, ZeroGradClearsAndParametersWithoutGradStay) {
  Tensor p = Tensor::from_vector<float>({1, 2}, {2});
  p.set_requires_grad(true);
  p.set_grad(Tensor::from_vector<float>({1, 1}, {2}));
  SGD opt({p}, 0.1f, 0.9f);
  opt.zero_grad();
  EXPECT_FALSE(p.grad().defined());
  opt.step();  // nothing to do
  EXPECT_EQ(p.to_vector<float>(), (std::vector<float>{1, 2}));
}

TEST(Optimizer, BadSettingsAreErrors) {
  Tensor p = Tensor::zeros({2});
  expect_error([&] { SGD({p}, -0.1f); }, {"learning rate", "negative"});
  expect_error([&] { SGD({p}, 0.1f, 1.0f); }, {"SGD", "momentum"});
  expect_error([&] { SGD({p}, 0.1f, 0.0f, 0.0f, true); }, {"Nesterov"});
  expect_error([&] { SGD({p}, 0.1f, 0.9f, -1.0f); }, {"weight decay"});
  expect_error([&] { Adam({p}, 0.1f, 0.0f, false, 1.0f); }, {"Adam", "betas"});
  expect_error([&] { Adam({p}, 0.1f, -0.5f); }, {"Adam: weight decay -0.5 is negative"});
  expect_error([&] { make_optimizer("rmsprop", {p}, 0.1f, 0.9f, 0.0f); },
               {"unknown optimizer", "rmsprop", "sgd"});
  expect_error([&] { SGD({Tensor::zeros({2}, DType::F64)}, 0.1f); }, {"F32", "F64[2]"});
  expect_error([&] { SGD({Tensor::zeros({2, 3}).transpose(0, 1)}, 0.1f); }, {"contiguous"});
}

// ---------------------------------------------------------------------------------------------
// Learning-rate schedules
// ---------------------------------------------------------------------------------------------

LrSchedule schedule(LrSchedule::Kind kind, long total, long warmup = 0) {
  LrSchedule s;
  s.kind = kind;
  s.base_lr = 0.4f;
  s.total_steps = total;
  s.warmup_steps = warmup;
  return s;
}

// Gradients above the limit are scaled to it along the same direction, gradients within it are
// left bit for bit, and the norm before clipping is returned.
TEST(ClipGradNorm, ScalesOnlyAboveTheLimitAlongTheSameDirection) {
  Linear lin(3, 2);
  auto params = lin.parameters();  // weight [2, 3], bias [2]
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(clip_grad_norm(lin, 1.0), 0.0) << "no gradients: nothing to clip";
  std::mt19937_64 rng(fresh_seed());
  std::normal_distribution<float> n(0.0f, 3.0f);
  std::vector<float> w(6), b(2);
  for (float& v : w) v = n(rng);
  for (float& v : b) v = n(rng);
  double sq = 0;
  for (float v : w) sq += static_cast<double>(v) * v;
  for (float v : b) sq += static_cast<double>(v) * v;
  const double norm = std::sqrt(sq);
  params[0].set_grad(Tensor::from_vector(w, {2, 3}));
  params[1].set_grad(Tensor::from_vector(b, {2}));

  EXPECT_NEAR(clip_grad_norm(lin, norm * 1.01), norm, 1e-5 * norm);
  EXPECT_EQ(params[0].grad().to_vector<float>(), w) << "within the limit: untouched";
  EXPECT_EQ(params[1].grad().to_vector<float>(), b);

  const double limit = norm / 4;
  EXPECT_NEAR(clip_grad_norm(lin, limit), norm, 1e-5 * norm);
  const std::vector<float> w2 = params[0].grad().to_vector<float>();
  const std::vector<float> b2 = params[1].grad().to_vector<float>();
  double sq2 = 0;
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_NEAR(w2[i], w[i] * 0.25, 1e-6 * std::abs(w[i]) + 1e-7) << i;
    sq2 += static_cast<double>(w2[i]) * w2[i];
  }
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_NEAR(b2[i], b[i] * 0.25, 1e-6 * std::abs(b[i]) + 1e-7) << i;
    sq2 += static_cast<double>(b2[i]) * b2[i];
  }
  EXPECT_NEAR(std::sqrt(sq2), limit, 1e-5 * limit);

  // Just above the limit is above it: a norm 10 % over is scaled down to the limit too.
  params[0].set_grad(Tensor::from_vector(w, {2, 3}));
  params[1].set_grad(Tensor::from_vector(b, {2}));
  EXPECT_NEAR(clip_grad_norm(lin, norm / 1.1), norm, 1e-5 * norm);
  const std::vector<float> w3 = params[0].grad().to_vector<float>();
  for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(w3[i], w[i] / 1.1, 1e-6 * std::abs(w[i]) + 1e-7) << i;
}

// A diverging step's gradients (entries past sqrt(FLT_MAX), so their squares overflow float)
// still have a finite norm, and clipping them to 1 (a scale near 1e-21) keeps their direction:
// an update by (scale - 1) * g would round to -g and zero them.
TEST(ClipGradNorm, ExplodingGradientsKeepTheirDirection) {
  std::vector<Device> devices{Device::CPU};
  if (cuda_available()) devices.push_back(Device::CUDA);
  for (Device dev : devices) {
    SCOPED_TRACE(device_name(dev));
    Linear lin(4, 3);
    lin.to(dev);
    auto params = lin.parameters();
    std::mt19937_64 rng(fresh_seed());
    std::normal_distribution<float> n(0.0f, 1e20f);
    std::vector<float> w(12), b(3);
    double sq = 0;
    for (float& v : w) v = n(rng);
    for (float& v : b) v = n(rng);
    for (float v : w) sq += static_cast<double>(v) * v;
    for (float v : b) sq += static_cast<double>(v) * v;
    const double norm = std::sqrt(sq);
    params[0].set_grad(Tensor::from_vector(w, {3, 4}, dev));
    params[1].set_grad(Tensor::from_vector(b, {3}, dev));
    EXPECT_NEAR(clip_grad_norm(lin, 1.0), norm, 1e-6 * norm);
    const std::vector<float> w2 = params[0].grad().to_vector<float>();
    const std::vector<float> b2 = params[1].grad().to_vector<float>();
    double sq2 = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      EXPECT_NEAR(w2[i], w[i] / norm, 1e-6 * std::abs(w[i] / norm) + 1e-30) << i;
      sq2 += static_cast<double>(w2[i]) * w2[i];
    }
    for (size_t i = 0; i < b.size(); ++i) {
      EXPECT_NEAR(b2[i], b[i] / norm, 1e-6 * std::abs(b[i] / norm) + 1e-30) << i;
      sq2 += static_cast<double>(b2[i]) * b2[i];
    }
    EXPECT_NEAR(std::sqrt(sq2), 1.0, 1e-5);
  }
}

TEST(LrSchedule, Constant) {
  const LrSchedule s = schedule(LrSchedule::Kind::Constant, 100);
  for (long t : {0L, 1L, 50L, 99L, 100L, 1000L}) EXPECT_FLOAT_EQ(s.at(t), 0.4f) << t;
}

TEST(LrSchedule, StepDropsAtHalfAndThreeQuarters) {
  const LrSchedule s = schedule(LrSchedule::Kind::Step, 200);
  EXPECT_FLOAT_EQ(s.at(0), 0.4f);
  EXPECT_FLOAT_EQ(s.at(99), 0.4f);
  EXPECT_FLOAT_EQ(s.at(100), 0.04f);
  EXPECT_FLOAT_EQ(s.at(149), 0.04f);
  EXPECT_FLOAT_EQ(s.at(150), 0.004f);
  EXPECT_FLOAT_EQ(s.at(199), 0.004f);
  EXPECT_FLOAT_EQ(s.at(400), 0.004f);  // past the end: the last value
  LrSchedule half = s;
  half.gamma = 0.5f;
  EXPECT_FLOAT_EQ(half.at(120), 0.2f);
  EXPECT_FLOAT_EQ(half.at(160), 0.1f);
}

TEST(LrSchedule, CosineEndpointsAndMidpoint) {
  const LrSchedule s = schedule(LrSchedule::Kind::Cosine, 1000);
  EXPECT_FLOAT_EQ(s.at(0), 0.4f);
  EXPECT_FLOAT_EQ(s.at(500), 0.2f);
  EXPECT_NEAR(s.at(1000), 0.0f, 1e-9);
  EXPECT_NEAR(s.at(250), 0.2 * (1 + std::cos(M_PI / 4)), 1e-6);
  EXPECT_NEAR(s.at(999), 0.2 * (1 + std::cos(M_PI * 0.999)), 1e-8);
  EXPECT_GT(s.at(999), 0.0f);
  float prev = s.at(0);
  for (long t = 1; t <= 1000; ++t) {
    ASSERT_LE(s.at(t), prev) << "cosine must not increase, step " << t;
    prev = s.at(t);
  }
  // Symmetric about the midpoint: lr(t) + lr(T - t) = base.
  EXPECT_NEAR(s.at(100) + s.at(900), 0.4f, 1e-6);
  // Past the end the rate stays at 0; it does not climb the cosine's next half.
  EXPECT_NEAR(s.at(1500), 0.0f, 1e-9);
  EXPECT_NEAR(s.at(2000), 0.0f, 1e-9);
  // A schedule of no steps is its starting rate, not 0 / 0.
  EXPECT_FLOAT_EQ(schedule(LrSchedule::Kind::Cosine, 0).at(0), 0.4f);
}

TEST(LrSchedule, LinearWarmupMultipliesTheSchedule) {
  const LrSchedule c = schedule(LrSchedule::Kind::Constant, 100, 10);
  EXPECT_FLOAT_EQ(c.at(0), 0.04f);  // (step + 1) / warmup
  EXPECT_FLOAT_EQ(c.at(4), 0.2f);
  EXPECT_FLOAT_EQ(c.at(9), 0.4f);
  EXPECT_FLOAT_EQ(c.at(10), 0.4f);
  for (long t = 1; t < 10; ++t) EXPECT_GT(c.at(t), c.at(t - 1)) << t;
  const LrSchedule cos = schedule(LrSchedule::Kind::Cosine, 100, 10);
  EXPECT_NEAR(cos.at(4), 0.4 * 0.5 * 0.5 * (1 + std::cos(M_PI * 0.04)), 1e-7);
  EXPECT_NEAR(cos.at(50), 0.2, 1e-7);  // after the warm-up: plain cosine
}

TEST(LrSchedule, ParseNames) {
  EXPECT_EQ(parse_schedule("constant"), LrSchedule::Kind::Constant);
  EXPECT_EQ(parse_schedule("step"), LrSchedule::Kind::Step);
  EXPECT_EQ(parse_schedule("cosine"), LrSchedule::Kind::Cosine);
  EXPECT_STREQ(schedule_name(LrSchedule::Kind::Cosine), "cosine");
  expect_error([] { parse_schedule("linear"); }, {"unknown schedule", "linear"});
}

// ---------------------------------------------------------------------------------------------
// Linear initialisation
// ---------------------------------------------------------------------------------------------

TEST(LinearInit, SameSeedSameWeightsDifferentSeedDifferent) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Linear a(50, 20), b(50, 20);
  a.reset_parameters(seed);
  b.reset_parameters(seed);
  EXPECT_EQ(a.weight().to_vector<float>(), b.weight().to_vector<float>());
  EXPECT_EQ(a.bias().to_vector<float>(), b.bias().to_vector<float>());
  b.reset_parameters(seed + 1);
  const std::vector<float> wa = a.weight().to_vector<float>(), wb = b.weight().to_vector<float>();
  int same = 0;
  for (size_t i = 0; i < wa.size(); ++i) same += wa[i] == wb[i];
  EXPECT_LT(same, 3) << "a different seed must give different weights";
  // Weight and bias come from different streams.
  EXPECT_NE(a.weight().to_vector<float>()[0], a.bias().to_vector<float>()[0]);
  // Re-initialising with the first seed restores the weights exactly.
  b.reset_parameters(seed);
  EXPECT_EQ(b.weight().to_vector<float>(), wa);
}

TEST(LinearInit, ValuesFillTheirBounds) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  struct Case {
    InitScheme scheme;
    double bound;
  };
  const int64_t in = 400, out = 100;
  for (Case c : {Case{InitScheme::TorchDefault, 1 / std::sqrt(400.0)},
                 Case{InitScheme::KaimingUniform, std::sqrt(6 / 400.0)},
                 Case{InitScheme::GlorotUniform, std::sqrt(6 / 500.0)}}) {
    SCOPED_TRACE(init_name(c.scheme));
    EXPECT_NEAR(init_bound(c.scheme, in, out), c.bound, 1e-7);
    Linear l(in, out, true, c.scheme);
    l.reset_parameters(seed);
    const std::vector<float> w = l.weight().to_vector<float>();
    double mx = 0, mean = 0, sq = 0;
    for (float v : w) {
      mx = std::max(mx, std::abs(static_cast<double>(v)));
      mean += v;
      sq += static_cast<double>(v) * v;
    }
    mean /= w.size();
    sq /= w.size();
    EXPECT_LE(mx, c.bound * (1 + 1e-6));
    EXPECT_GT(mx, 0.99 * c.bound);  // 40000 uniform draws reach the edge
    EXPECT_NEAR(mean, 0.0, 0.02 * c.bound);
    EXPECT_NEAR(sq, c.bound * c.bound / 3, 0.03 * c.bound * c.bound);  // var of U(-b, b)
    // The bias always uses PyTorch's 1/sqrt(fan_in).
    for (float v : l.bias().to_vector<float>()) EXPECT_LE(std::abs(v), 1 / std::sqrt(400.0) + 1e-7);
  }
  expect_error([] { parse_init("xavier"); }, {"unknown init scheme", "xavier"});
}

TEST(LinearInit, LayersOfAModelGetDifferentStreams) {
  nlohmann::json cfg = json::object();
  auto mlp = build_model("mlp", cfg);
  mlp->reset_parameters(7);
  auto named = mlp->named_parameters();
  ASSERT_EQ(named.size(), 6u);
  EXPECT_EQ(named[0].first, "1.weight");
  EXPECT_EQ(named[5].first, "5.bias");
  EXPECT_EQ(mlp->num_parameters(), 266610);
  std::set<float> firsts;
  for (auto& [name, t] : named) firsts.insert(t.to_vector<float>()[0]);
  EXPECT_EQ(firsts.size(), named.size()) << "every parameter draws from its own stream";
  expect_error([] { Linear(3, 0); }, {"Linear", "out=0"});
  expect_error([] { Linear(0, 3); }, {"Linear", "in=0"});
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

// An mlp after a few SGD steps on random data: its weights are no longer the initial ones.
std::shared_ptr<Module> trained_mlp(uint64_t seed, json& cfg) {
  cfg = json{{"hidden", {32, 16}}};
  auto model = build_model("mlp", cfg);
  model->reset_parameters(seed);
  SGD opt(model->parameters(), 0.1f, 0.9f);
  std::mt19937_64 rng(seed);
  const Tensor x = Tensor::from_vector(random_floats(8 * 784, rng), {8, 1, 28, 28});
  std::vector<int64_t> y(8);
  for (auto& v : y) v = static_cast<int64_t>(rng() % 10);
  const Tensor labels = Tensor::from_vector(y, {8});
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    cross_entropy(model->forward(x), labels).backward();
    opt.step();
  }
  return model;
}

std::vector<float> outputs(Module& m, const Tensor& x) {
  NoGradGuard ng;
  m.eval();
  return m.forward(x).to_vector<float>();
}

TEST(Checkpoint, RoundTripGivesIdenticalOutputs) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TempDir dir;
  json cfg;
  auto model = trained_mlp(seed, cfg);
  const std::string path = dir.file("model.safetensors");
  save_checkpoint(path, *model, "mlp", cfg, {{"epoch", "3"}});
  const Checkpoint ck = load_checkpoint(path);
  EXPECT_EQ(ck.model_name, "mlp");
  EXPECT_EQ(ck.model_config, cfg);
  EXPECT_EQ(ck.model_config.at("hidden"), json({32, 16}));
  EXPECT_EQ(ck.metadata.at("model"), "mlp");
  EXPECT_EQ(json::parse(ck.metadata.at("config")), cfg);
  EXPECT_EQ(ck.metadata.at("format"), "tdrop");
  EXPECT_EQ(ck.metadata.at("epoch"), "3");
  ASSERT_NE(ck.model, nullptr);
  EXPECT_FALSE(ck.model->training());
  EXPECT_EQ(ck.model->num_parameters(), model->num_parameters());
  // Same parameters, bit for bit, and the same outputs on a fresh random batch.
  const auto a = model->named_parameters(), b = ck.model->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.to_vector<float>(), b[i].second.to_vector<float>()) << a[i].first;
  }
  std::mt19937_64 rng(seed ^ 0x5eed);
  const Tensor x = Tensor::from_vector(random_floats(16 * 784, rng, -2, 2), {16, 1, 28, 28});
  const std::vector<float> want = outputs(*model, x);
  EXPECT_EQ(outputs(*ck.model, x), want);
  // The header is plain JSON that names the model: any safetensors reader can see it.
  const SafetensorsFile raw = load_safetensors(path);
  EXPECT_EQ(raw.tensors.size(), 6u);
  EXPECT_EQ(raw.tensors.at("1.weight").shape, (std::vector<int64_t>{32, 784}));
  EXPECT_EQ(raw.tensors.at("1.weight").dtype, "F32");
}

// BatchNorm's running statistics are state too: a checkpoint of a network that has them
// (resnet20) restores them, so the loaded model evaluates to the same bits.
TEST(Checkpoint, RoundTripKeepsBatchNormRunningStatistics) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  json cfg;
  const auto model = testing::resnet20_with_moved_statistics(seed, cfg);
  TempDir dir;
  const std::string path = dir.file("resnet.safetensors");
  save_checkpoint(path, *model, "resnet20", cfg);
  const Checkpoint ck = load_checkpoint(path);
  testing::expect_same_buffers(*model, *ck.model);
  std::mt19937_64 rng(seed);
  const Tensor x = Tensor::from_vector(random_floats(2 * 32 * 32, rng, -2, 2), {2, 1, 32, 32});
  EXPECT_EQ(outputs(*ck.model, x), outputs(*model, x));
}

class CheckpointErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    json cfg;
    auto model = trained_mlp(11, cfg);
    good_ = dir_.file("good.safetensors");
    save_checkpoint(good_, *model, "mlp", cfg);
  }
  // Writes a copy of the good checkpoint after `edit` and returns the error from loading it.
  template <class F>
  std::pair<std::string, std::string> broken(const std::string& name, F&& edit) {
    SafetensorsFile f = load_safetensors(good_);
    edit(f);
    const std::string path = dir_.file(name);
    save_safetensors(path, f);
    return {path, error_message([&] { load_checkpoint(path); })};
  }
  static void expect_has(const std::string& msg, std::initializer_list<std::string> needles) {
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
    for (const std::string& n : needles)
      EXPECT_NE(msg.find(n), std::string::npos) << "message \"" << msg << "\" lacks \"" << n << "\"";
  }
  TempDir dir_;
  std::string good_;
};

TEST_F(CheckpointErrors, MissingTensor) {
  auto [path, msg] = broken("missing.safetensors", [](SafetensorsFile& f) { f.tensors.erase("3.bias"); });
  expect_has(msg, {path, "'3.bias'", "missing"});
}

TEST_F(CheckpointErrors, MisshapedTensor) {
  auto [path, msg] = broken("misshaped.safetensors", [](SafetensorsFile& f) {
    RawTensor& t = f.tensors.at("3.weight");  // [16, 32]
    t.shape = {16, 31};
    t.bytes.resize(16 * 31 * 4);
  });
  expect_has(msg, {path, "'3.weight'", "[16, 31]", "[16, 32]"});
}

TEST_F(CheckpointErrors, ExtraTensor) {
  auto [path, msg] = broken("extra.safetensors", [](SafetensorsFile& f) {
    f.tensors["7.weight"] = RawTensor{"F32", {2}, std::string(8, '\0')};
  });
  expect_has(msg, {path, "'7.weight'", "does not belong"});
}

TEST_F(CheckpointErrors, WrongDtype) {
  auto [path, msg] = broken("f64.safetensors", [](SafetensorsFile& f) {
    RawTensor& t = f.tensors.at("5.bias");
    t.dtype = "F64";
    t.bytes.resize(t.bytes.size() * 2);
  });
  expect_has(msg, {path, "'5.bias'", "F64"});
}

TEST_F(CheckpointErrors, UnknownModelName) {
  auto [path, msg] = broken("wrong_model.safetensors",
                            [](SafetensorsFile& f) { f.metadata["model"] = "resnet9000"; });
  expect_has(msg, {path, "resnet9000"});
  EXPECT_NE(msg.find("mlp"), std::string::npos) << "should list the known models: " << msg;
}

TEST_F(CheckpointErrors, MetadataProblems) {
  {
    auto [path, msg] = broken("no_model.safetensors",
                              [](SafetensorsFile& f) { f.metadata.erase("model"); });
    expect_has(msg, {path, "not a tdrop checkpoint"});
  }
  {
    auto [path, msg] = broken("no_config.safetensors",
                              [](SafetensorsFile& f) { f.metadata.erase("config"); });
    expect_has(msg, {path, "'config'"});
  }
  {
    auto [path, msg] = broken("bad_config.safetensors",
                              [](SafetensorsFile& f) { f.metadata["config"] = "{hidden: [1,"; });
    expect_has(msg, {path, "not valid JSON"});
  }
}

TEST_F(CheckpointErrors, MissingTruncatedAndGarbageFiles) {
  const std::string missing = dir_.file("nope.safetensors");
  EXPECT_NE(error_message([&] { load_checkpoint(missing); }).find(missing), std::string::npos);
  const std::string bytes = read_file(good_);
  for (size_t cut : {size_t{0}, size_t{5}, size_t{100}, bytes.size() / 2, bytes.size() - 1}) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    const std::string path = dir_.file("cut.safetensors");
    write_file_atomic(path, bytes.substr(0, cut));
    expect_has(error_message([&] { load_checkpoint(path); }), {path});
  }
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::string garbage(4096, '\0');
  for (char& c : garbage) c = static_cast<char>(rng());
  const std::string path = dir_.file("garbage.safetensors");
  write_file_atomic(path, garbage);
  expect_has(error_message([&] { load_checkpoint(path); }), {path});
}

TEST(CheckpointAtomic, NoTemporaryFilesAreLeftBehind) {
  TempDir dir;
  json cfg;
  auto model = trained_mlp(3, cfg);
  const std::string path = dir.file("model.safetensors");
  save_checkpoint(path, *model, "mlp", cfg);
  save_checkpoint(path, *model, "mlp", cfg, {{"epoch", "2"}});  // overwrite in place
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(load_checkpoint(path).metadata.at("epoch"), "2");
  // Readable by others, as a file written by open() under a usual umask would be: the temp
  // file's 0600 from mkstemp must not carry over to the result.
  EXPECT_EQ(fs::status(path).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                fs::perms::others_read);

  // A rename that fails (the target is a non-empty directory) is an error naming the file and
  // leaves neither a torn file nor a temporary behind.
  fs::create_directories(dir.path() / "blocked" / "inside");
  const std::string blocked = dir.file("blocked");
  expect_error([&] { save_checkpoint(blocked, *model, "mlp", cfg); }, {blocked});
  EXPECT_EQ(dir.listing(), (std::vector<std::string>{"blocked", "model.safetensors"}));
  EXPECT_TRUE(fs::is_directory(blocked));

  // A missing directory is an error naming the path.
  const std::string nowhere = dir.file("no/such/dir/model.safetensors");
  expect_error([&] { save_checkpoint(nowhere, *model, "mlp", cfg); }, {nowhere});
}

// ---------------------------------------------------------------------------------------------
// BatchLoader
// ---------------------------------------------------------------------------------------------

// `count` 1x2x3 images; every pixel of image i is (7 * i) % 256 and its label is i, so a batch
// tells which sample each row came from.
ImageDataset tagged_dataset(int64_t count) {
  ImageDataset d;
  d.count = count;
  d.channels = 1;
  d.height = 2;
  d.width = 3;
  for (int64_t i = 0; i < count; ++i) {
    for (int p = 0; p < 6; ++p) d.images.push_back(static_cast<uint8_t>((7 * i) % 256));
    d.labels.push_back(i);
  }
  return d;
}

std::vector<int64_t> epoch_order(BatchLoader& loader, uint64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<int64_t> order;
  for (int64_t b = 0; b < loader.num_batches(); ++b)
    for (int64_t v : loader.batch(b).labels.to_vector<int64_t>()) order.push_back(v);
  return order;
}

// A resumed epoch starts its progress line at the step it stopped at: the ETA extrapolates
// from this run's steps only. 10 steps in at least 100 ms leave 40 steps, at least 0.4 s (the
// steps before the resume, counted as done in no time, would make it 0.07 s).
TEST(ProgressLine, EtaOfAResumedEpochCountsOnlyThisRunsSteps) {
  ::testing::internal::CaptureStderr();
  const auto t0 = std::chrono::steady_clock::now();
  {
    ProgressLine line(true, /*done_before=*/50);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    line.update("epoch 1/1 step", 60, 100, "");
  }
  // The line's elapsed time is at most this: the ETA is 40/10 of it, not 100/10.
  const double at_most =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(out.find("epoch 1/1 step 60/100 ( 60%) "), 0u) << out;  // the epoch's share
  const size_t at = out.find("ETA ");
  ASSERT_NE(at, std::string::npos) << out;
  const double eta = std::strtod(out.c_str() + at + 4, nullptr);
  EXPECT_GE(eta, 0.4) << out;
  EXPECT_LE(eta, 4 * at_most + 0.05) << out << " after " << at_most << " s";
}

// Written to a file (not a terminal), the progress line is one line per update at most every
// 10 seconds, the last step always: label, steps, percent, the caller's text, the ETA. Off, it
// writes nothing.
TEST(ProgressLine, LogFilesGetWholeLinesAndTheLastStep) {
  ::testing::internal::CaptureStderr();
  {
    ProgressLine line(true);
    line.update("prune a.safetensors", 1, 4, "acc 80.00%");
    line.update("prune a.safetensors", 2, 4, "acc 81.00%");  // within 10 s: not written
    line.update("prune a.safetensors", 4, 4, "acc 82.00%");
    line.finish();
    ProgressLine off(false);
    off.update("hidden", 1, 2, "");
  }
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(out.find("prune a.safetensors 1/4 ( 25%) acc 80.00%  ETA "), 0u) << out;
  EXPECT_EQ(out.find("2/4"), std::string::npos) << out;
  EXPECT_NE(out.find("\nprune a.safetensors 4/4 (100%) acc 82.00%  ETA 0.0s\n"),
            std::string::npos)
      << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2) << out;
  EXPECT_EQ(out.find("hidden"), std::string::npos) << out;
}

TEST(ProgressLine, DurationsReadAsSecondsMinutesOrHours) {
  EXPECT_EQ(format_duration(0), "0.0s");
  EXPECT_EQ(format_duration(5.34), "5.3s");
  EXPECT_EQ(format_duration(59.4), "59.4s");
  EXPECT_EQ(format_duration(59.6), "1m00s");  // rounded to whole seconds from a minute on
  EXPECT_EQ(format_duration(61), "1m01s");
  EXPECT_EQ(format_duration(3599.4), "59m59s");
  EXPECT_EQ(format_duration(3600), "1h00m");
  EXPECT_EQ(format_duration(7322), "2h02m");
  for (const double bad : {-1.0, std::nan(""), std::numeric_limits<double>::infinity()})
    EXPECT_EQ(format_duration(bad), "?") << bad;
}

TEST(BatchLoader, BatchesShapesAndLastPartialBatch) {
  const ImageDataset d = tagged_dataset(37);
  BatchLoader loader(d, 8, false, 1, Device::CPU, {0.0f}, {1.0f});
  EXPECT_EQ(loader.size(), 37);
  ASSERT_EQ(loader.num_batches(), 5);
  loader.start_epoch(0);
  for (int64_t b = 0; b < 5; ++b) {
    const Batch batch = loader.batch(b);
    const int64_t n = b < 4 ? 8 : 5;
    EXPECT_EQ(batch.images.shape(), (Shape{n, 1, 2, 3})) << "batch " << b;
    EXPECT_EQ(batch.images.dtype(), DType::F32);
    EXPECT_EQ(batch.labels.shape(), Shape{n});
    EXPECT_EQ(batch.labels.dtype(), DType::I64);
  }
  EXPECT_EQ(BatchLoader(d, 37, false, 1, Device::CPU, {0.0f}, {1.0f}).num_batches(), 1);
  EXPECT_EQ(BatchLoader(d, 100, false, 1, Device::CPU, {0.0f}, {1.0f}).num_batches(), 1);
  EXPECT_EQ(BatchLoader(d, 1, false, 1, Device::CPU, {0.0f}, {1.0f}).num_batches(), 37);
  expect_error([&] { loader.batch(5); }, {"batch 5", "out of range"});
  expect_error([&] { loader.batch(-1); }, {"out of range"});
  expect_error([&] { BatchLoader(d, 0, false, 1, Device::CPU, {0.0f}, {1.0f}); }, {"batch size"});
  expect_error([&] { BatchLoader(ImageDataset{}, 4, false, 1, Device::CPU, {0.0f}, {1.0f}); }, {"empty"});
}

TEST(BatchLoader, WithoutShuffleTheOrderIsTheDatasetOrder) {
  BatchLoader loader(tagged_dataset(37), 8, false, 1, Device::CPU, {0.0f}, {1.0f});
  std::vector<int64_t> identity(37);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(epoch_order(loader, 0), identity);
  EXPECT_EQ(epoch_order(loader, 5), identity);
}

TEST(BatchLoader, ShuffleIsAPermutationDeterministicPerSeedAndEpoch) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const ImageDataset d = tagged_dataset(1000);
  BatchLoader a(d, 64, true, seed, Device::CPU, {0.0f}, {1.0f}), b(d, 64, true, seed, Device::CPU, {0.0f}, {1.0f});
  BatchLoader other_seed(d, 64, true, seed + 1, Device::CPU, {0.0f}, {1.0f});
  const std::vector<int64_t> e0 = epoch_order(a, 0), e1 = epoch_order(a, 1);
  std::vector<int64_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> identity(1000);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(sorted, identity) << "every sample exactly once per epoch";
  sorted = e1;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, identity);
  EXPECT_NE(e0, identity) << "shuffled";
  EXPECT_NE(e0, e1) << "a new order every epoch";
  EXPECT_EQ(epoch_order(b, 1), e1) << "same (seed, epoch) => same order";
  EXPECT_EQ(epoch_order(b, 0), e0) << "epoch 0 again, after epoch 1";
  EXPECT_EQ(epoch_order(a, 0), e0);
  EXPECT_NE(epoch_order(other_seed, 0), e0) << "another seed, another order";
  // A batch size change keeps the order (it depends on the seed and epoch only).
  BatchLoader c(d, 128, true, seed, Device::CPU, {0.0f}, {1.0f});
  EXPECT_EQ(epoch_order(c, 1), e1);
  // Not a rotation or some other structured order: few fixed points (about 1 expected).
  int fixed = 0;
  for (int64_t i = 0; i < 1000; ++i) fixed += e0[i] == i;
  EXPECT_LT(fixed, 10);
}

// The shuffle draws every order equally often: over 6000 epochs of 3 samples each of the 6
// orders comes up 1000 times, within 6 standard deviations (29). (A shuffle that drew only
// cycles, or never swapped the first two, would leave some order out.)
TEST(BatchLoader, ShuffleDrawsEveryOrderEquallyOften) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const ImageDataset d = tagged_dataset(3);
  BatchLoader loader(d, 3, true, seed, Device::CPU, {0.0f}, {1.0f});
  std::map<std::vector<int64_t>, int> seen;
  for (uint64_t epoch = 0; epoch < 6000; ++epoch) ++seen[epoch_order(loader, epoch)];
  EXPECT_EQ(seen.size(), 6u);
  for (const auto& [order, count] : seen) {
    EXPECT_GT(count, 1000 - 6 * 29) << order[0] << order[1] << order[2];
    EXPECT_LT(count, 1000 + 6 * 29) << order[0] << order[1] << order[2];
  }
}

TEST(BatchLoader, ImagesStayWithTheirLabelsAndAreNormalised) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const ImageDataset d = tagged_dataset(50);
  BatchLoader loader(d, 16, true, seed, Device::CPU, find_dataset("fashion-mnist").mean, find_dataset("fashion-mnist").std);
  loader.start_epoch(3);
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    const Batch batch = loader.batch(b);
    const std::vector<int64_t> y = batch.labels.to_vector<int64_t>();
    const std::vector<float> x = batch.images.to_vector<float>();
    for (size_t j = 0; j < y.size(); ++j) {
      const double pixel = static_cast<double>((7 * y[j]) % 256);
      const double want = (pixel / 255.0 - 0.2860) / 0.3530;
      for (int p = 0; p < 6; ++p)
        ASSERT_NEAR(x[j * 6 + p], want, 1e-5) << "sample " << y[j] << " pixel " << p;
    }
  }
  // The normalisation endpoints: 0 -> -mean/std, 255 -> (1-mean)/std.
  ImageDataset two;
  two.count = 2;
  two.height = two.width = 1;
  two.images = {0, 255};
  two.labels = {0, 1};
  BatchLoader l2(two, 2, false, 0, Device::CPU, {0.5f}, {0.25f});
  l2.start_epoch(0);
  const std::vector<float> ends = l2.batch(0).images.to_vector<float>();
  EXPECT_NEAR(ends[0], -2.0f, 1e-6);
  EXPECT_NEAR(ends[1], 2.0f, 1e-6);
}

// ---------------------------------------------------------------------------------------------
// End to end: train() on real Fashion-MNIST
// ---------------------------------------------------------------------------------------------

std::string fashion_mnist_dir() {
  const char* env = std::getenv("TDROP_DATA_DIR");
  return env && *env ? env : kFashionMnistDir;
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return json::parse(in);
}

TEST(EndToEnd, MlpLearnsFashionMnistAndWritesItsRunDirectory) {
  const std::string data = fashion_mnist_dir();
  if (!fs::exists(data + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not found in " << data
                 << "; install the Debian package dataset-fashion-mnist "
                    "(apt-get install dataset-fashion-mnist) or set TDROP_DATA_DIR";
  TempDir dir;
  TrainConfig cfg;
  cfg.model = "mlp";
  cfg.data_dir = data;
  cfg.epochs = 1;
  cfg.train_limit = 12000;
  cfg.progress = false;
  cfg.print_epochs = false;
  cfg.device = "cpu";
  cfg.seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(cfg.seed));
  cfg.out_dir = dir.file("run");

  const TrainResult r = train(cfg);
  ASSERT_EQ(r.epochs.size(), 1u);
  const EpochMetrics& m = r.epochs[0];
  EXPECT_EQ(r.device, Device::CPU);
  EXPECT_EQ(m.epoch, 1);
  EXPECT_EQ(m.step, 94);  // ceil(12000 / 128)
  EXPECT_GT(m.test_accuracy, 0.75) << "chance is 0.10";
  EXPECT_LE(m.test_accuracy, 1.0);
  EXPECT_LT(m.test_loss, 0.8) << "ln(10) = 2.30 at chance";
  EXPECT_TRUE(std::isfinite(m.train_loss));
  EXPECT_LT(m.train_loss, 1.2);
  EXPECT_GT(m.train_accuracy, 0.6);
  EXPECT_GT(m.samples_per_second, 0);
  EXPECT_GE(m.gpu_wait_seconds, 0);
  EXPECT_GE(m.data_wait_seconds, 0);
  EXPECT_LE(m.gpu_wait_seconds + m.data_wait_seconds, m.seconds);
  EXPECT_FALSE(r.model->training());

  // config.json: the whole configuration, with the model config completed.
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"run"});
  const json c = read_json(cfg.out_dir + "/config.json");
  EXPECT_EQ(c.at("model"), "mlp");
  EXPECT_EQ(c.at("epochs"), 1);
  EXPECT_EQ(c.at("batch_size"), 128);
  EXPECT_EQ(c.at("optimizer"), "sgd");
  EXPECT_EQ(c.at("schedule"), "cosine");
  EXPECT_EQ(c.at("device"), "cpu");
  EXPECT_EQ(c.at("resolved_device"), "cpu");
  EXPECT_EQ(c.at("seed"), cfg.seed);
  EXPECT_EQ(c.at("train_limit"), 12000);
  EXPECT_NEAR(c.at("lr").get<double>(), 0.05, 1e-7);
  EXPECT_EQ(c.at("model_config").at("input_features"), 784);
  EXPECT_EQ(c.at("model_config").at("num_classes"), 10);
  EXPECT_EQ(c.at("model_config").at("hidden"), json({300, 100}));

  // metrics.jsonl: one JSON object per epoch.
  std::ifstream in(cfg.out_dir + "/metrics.jsonl");
  std::vector<json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
  ASSERT_EQ(lines.size(), 1u);
  const json& j = lines[0];
  ASSERT_TRUE(j.is_object());
  for (const char* key : {"epoch", "step", "lr", "train_loss", "train_accuracy", "test_loss",
                          "test_accuracy", "seconds", "samples_per_second",
                          "gpu_wait_seconds", "data_wait_seconds"})
    EXPECT_TRUE(j.contains(key)) << "metrics.jsonl lacks \"" << key << "\"";
  EXPECT_EQ(j.at("epoch"), 1);
  EXPECT_EQ(j.at("step"), 94);
  EXPECT_DOUBLE_EQ(j.at("test_accuracy").get<double>(), m.test_accuracy);
  EXPECT_DOUBLE_EQ(j.at("train_loss").get<double>(), m.train_loss);

  // model.safetensors: loads alone and reproduces the reported accuracy.
  const Checkpoint ck = load_checkpoint(cfg.out_dir + "/model.safetensors");
  EXPECT_EQ(ck.model_name, "mlp");
  EXPECT_EQ(ck.metadata.at("epoch"), "1");
  EXPECT_EQ(ck.model->num_parameters(), 266610);
  ImageDataset test = load_dataset("fashion-mnist", data, "test");
  BatchLoader loader(test, 1000, false, 0, Device::CPU, find_dataset("fashion-mnist").mean, find_dataset("fashion-mnist").std);
  const EvalResult ev = evaluate(*ck.model, loader);
  EXPECT_EQ(ev.count, 10000);
  EXPECT_DOUBLE_EQ(ev.accuracy, m.test_accuracy);
  EXPECT_NEAR(ev.loss, m.test_loss, 1e-9);

  // The three promised files, and no temporary left behind by the atomic writes.
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(cfg.out_dir)) files.insert(e.path().filename());
  for (const char* f : {"config.json", "metrics.jsonl", "model.safetensors"})
    EXPECT_TRUE(files.count(f)) << f << " missing from " << cfg.out_dir;
  for (const std::string& f : files)
    EXPECT_EQ(f.find(".tmp"), std::string::npos) << "temporary file left behind: " << f;
}

TEST(EndToEnd, BadConfigurationsAreErrors) {
  TrainConfig cfg;
  cfg.progress = cfg.print_epochs = false;
  cfg.device = "cpu";
  cfg.epochs = 0;
  expect_error([&] { train(cfg); }, {"--epochs", "0"});
  cfg.epochs = 1;
  cfg.lr = -1;
  expect_error([&] { train(cfg); }, {"--lr"});
  cfg.lr = 0.05f;
  cfg.device = "tpu";
  expect_error([&] { train(cfg); }, {"unknown device", "tpu"});
  cfg.device = "cpu";
  cfg.dataset = "imagenet";
  expect_error([&] { train(cfg); }, {"unknown dataset", "imagenet"});
  cfg.dataset = "fashion-mnist";
  TempDir empty;
  cfg.data_dir = empty.path().string();
  expect_error([&] { train(cfg); }, {empty.path().string(), "dataset-fashion-mnist"});
}

// A small CPU run of the MLP on real Fashion-MNIST; skips when the dataset is not installed.
#define SKIP_WITHOUT_FASHION_MNIST()                                                   \
  if (!fs::exists(fashion_mnist_dir() + "/train-images-idx3-ubyte.gz"))                \
  GTEST_SKIP() << "Fashion-MNIST not found in " << fashion_mnist_dir()                 \
               << "; install the Debian package dataset-fashion-mnist or set TDROP_DATA_DIR"

TrainConfig small_run(uint64_t seed) {
  TrainConfig cfg;
  cfg.model = "mlp";
  cfg.data_dir = fashion_mnist_dir();
  cfg.epochs = 2;
  cfg.train_limit = 1500;
  cfg.progress = false;
  cfg.print_epochs = false;
  cfg.device = "cpu";
  cfg.seed = seed;
  return cfg;
}

// A ramp without --td-ramp-steps spans the whole run: T = steps per epoch x epochs, recorded in
// the model's config (and so in its checkpoint), and the last epoch ends at the full gamma.
TEST(EndToEnd, RampWithoutStepsSpansTheRun) {
  SKIP_WITHOUT_FASHION_MNIST();
  TrainConfig cfg = small_run(fresh_seed());
  cfg.td.mode = TargetedDropoutConfig::Mode::Weight;
  cfg.td.gamma = 0.5;
  cfg.td.alpha = 0.5f;
  cfg.td.ramp = true;
  TempDir dir;
  cfg.out_dir = dir.file("run");
  cfg.print_epochs = true;
  ::testing::internal::CaptureStdout();
  const TrainResult r = train(cfg);
  const std::string printed = ::testing::internal::GetCapturedStdout();
  ASSERT_EQ(r.epochs.size(), 2u);
  const long steps_per_epoch = r.epochs[0].step;
  EXPECT_EQ(steps_per_epoch, 12);  // 1500 images in batches of 128
  EXPECT_EQ(r.model_config.at("td").at("ramp_steps").get<long>(), 2 * steps_per_epoch);
  const EpochMetrics& last = r.epochs[1];
  EXPECT_EQ(last.sparsity_targeted, 0.5);
  EXPECT_GT(last.sparsity_all, 0.0);
  EXPECT_LT(last.sparsity_all, 0.5);  // the classifier is not targeted

  // What the run reports, metrics.jsonl and the epoch lines, is each epoch's own numbers, field
  // for field (the two sparsities differ, so a swap of them shows).
  std::ifstream in(cfg.out_dir + "/metrics.jsonl");
  std::vector<json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
  ASSERT_EQ(lines.size(), 2u);
  for (size_t e = 0; e < 2; ++e) {
    const EpochMetrics& m = r.epochs[e];
    const json& j = lines[e];
    EXPECT_EQ(j.at("epoch"), m.epoch);
    EXPECT_EQ(j.at("step"), m.step);
    EXPECT_EQ(j.at("lr").get<double>(), m.lr);
    EXPECT_EQ(j.at("train_loss").get<double>(), m.train_loss);
    EXPECT_EQ(j.at("train_accuracy").get<double>(), m.train_accuracy);
    EXPECT_EQ(j.at("test_loss").get<double>(), m.test_loss);
    EXPECT_EQ(j.at("test_accuracy").get<double>(), m.test_accuracy);
    EXPECT_EQ(j.at("sparsity_targeted").get<double>(), m.sparsity_targeted);
    EXPECT_EQ(j.at("sparsity_all").get<double>(), m.sparsity_all);
  }
  char want[160];
  std::snprintf(want, sizeof want,
                "epoch  2/2  loss %.4f  train acc %6.2f%%  test acc %6.2f%%  lr %.4g",
                last.train_loss, 100 * last.train_accuracy, 100 * last.test_accuracy, last.lr);
  EXPECT_NE(printed.find(want), std::string::npos) << "no \"" << want << "\" in\n" << printed;
  std::snprintf(want, sizeof want, "sparsity %.1f%%/%.1f%%\n", 100 * last.sparsity_targeted,
                100 * last.sparsity_all);
  EXPECT_NE(printed.find(want), std::string::npos) << "no \"" << want << "\" in\n" << printed;
}

// On the GPU a step's loss and predictions are looked at two steps after they are computed.
// The bookkeeping must give the run that looking at once gives, number for number.
TEST(EndToEnd, LookingAtLossesLateGivesTheSameRun) {
  SKIP_WITHOUT_FASHION_MNIST();
  TrainConfig cfg = small_run(fresh_seed());
  SCOPED_TRACE("seed " + std::to_string(cfg.seed));
  cfg.td.mode = TargetedDropoutConfig::Mode::Weight;
  cfg.td.gamma = 0.5f;
  cfg.td.alpha = 0.5f;
  cfg.readback_lag = 0;
  const TrainResult now = train(cfg);
  cfg.readback_lag = 2;
  const TrainResult late = train(cfg);
  ASSERT_EQ(now.epochs.size(), 2u);
  ASSERT_EQ(late.epochs.size(), 2u);
  for (size_t e = 0; e < 2; ++e) {
    EXPECT_EQ(late.epochs[e].step, now.epochs[e].step);
    EXPECT_EQ(late.epochs[e].train_loss, now.epochs[e].train_loss);
    EXPECT_EQ(late.epochs[e].train_accuracy, now.epochs[e].train_accuracy);
    EXPECT_EQ(late.epochs[e].test_accuracy, now.epochs[e].test_accuracy);
  }
  EXPECT_GT(now.epochs[1].train_accuracy, 0.5) << "the run must have learned something";
  const auto a = now.model->named_parameters(), b = late.model->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(a[i].second.to_vector<float>(), b[i].second.to_vector<float>()) << a[i].first;
}

// On the GPU the host queues steps ahead of the GPU and looks at their results later; a step
// that waited for the whole stream (a copy from pageable memory, reading a value back at once)
// would drain that queue every step. A run 3x as long must make exactly as many such waits.
TEST(EndToEnd, CudaTrainingStepsNeverWaitForTheWholeStream) {
  SKIP_WITHOUT_FASHION_MNIST();
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU: the CUDA training loop is not run";
  auto syncs_of = [](int64_t images) {
    TrainConfig cfg = small_run(fresh_seed());
    cfg.device = "cuda";
    cfg.epochs = 1;
    cfg.train_limit = images;
    cfg.td.mode = TargetedDropoutConfig::Mode::Weight;
    cfg.td.gamma = 0.5f;
    cfg.td.alpha = 0.5f;
    const int64_t before = host_stream_syncs();
    const TrainResult r = train(cfg);
    EXPECT_EQ(r.epochs.size(), 1u);
    EXPECT_GE(r.epochs[0].gpu_wait_seconds, 0.0);
    EXPECT_LE(r.epochs[0].gpu_wait_seconds, r.epochs[0].seconds);
    return host_stream_syncs() - before;
  };
  syncs_of(128 * 2);  // warm-up: cuDNN and cuBLAS handles, plans, allocator
  const int64_t short_run = syncs_of(128 * 4), long_run = syncs_of(128 * 12);
  EXPECT_EQ(long_run, short_run) << "the 8 extra training steps waited for the GPU "
                                 << long_run - short_run << " times";
}

// The CUDA training loop (whole-model targeted-dropout launch ahead of each step, losses and
// predictions read back two steps late, NaN checks one step late) reports the run the CPU
// does: the same steps, and losses and accuracies equal up to the rounding of fp32 sums.
TEST(EndToEnd, CudaTrainingFollowsTheCpuRun) {
  SKIP_WITHOUT_FASHION_MNIST();
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU: the CUDA training loop is not run";
  TrainConfig cfg = small_run(fresh_seed());
  SCOPED_TRACE("seed " + std::to_string(cfg.seed));
  cfg.epochs = 2;
  cfg.train_limit = 128 * 5;
  cfg.td.mode = TargetedDropoutConfig::Mode::Weight;
  cfg.td.gamma = 0.5f;
  cfg.td.alpha = 0.5f;
  const TrainResult cpu = train(cfg);
  cfg.device = "cuda";
  const TrainResult gpu = train(cfg);
  ASSERT_EQ(cpu.epochs.size(), 2u);
  ASSERT_EQ(gpu.epochs.size(), 2u);
  for (size_t e = 0; e < 2; ++e) {
    const EpochMetrics &c = cpu.epochs[e], &g = gpu.epochs[e];
    SCOPED_TRACE("epoch " + std::to_string(e + 1));
    EXPECT_EQ(g.step, c.step);
    EXPECT_NEAR(g.train_loss, c.train_loss, 1e-3 * c.train_loss);
    EXPECT_NEAR(g.train_accuracy, c.train_accuracy, 2.0 / 640);  // a prediction or two
    EXPECT_NEAR(g.test_loss, c.test_loss, 1e-3 * c.test_loss);
    EXPECT_NEAR(g.test_accuracy, c.test_accuracy, 0.002);
    EXPECT_EQ(g.sparsity_targeted, c.sparsity_targeted);
  }
  EXPECT_LT(cpu.epochs[1].train_loss, cpu.epochs[0].train_loss) << "the run must learn";
}

// A learning rate of 1000 blows the MLP up within a few steps: the error names the step whose
// loss was not finite, whether the loss was looked at at once or two steps late (with a save
// every step the loss is looked at before each save, so only a run without saves shows the
// late look), the resume point saved every step before it is still finite, and the message says
// whether a checkpoint was kept.
TEST(EndToEnd, DivergenceNamesTheStepAndKeepsTheLastGoodSave) {
  SKIP_WITHOUT_FASHION_MNIST();
  std::string first;
  for (auto [lag, save_every] : {std::pair{0, 1}, std::pair{2, 1}, std::pair{2, 0}}) {
    SCOPED_TRACE("lag " + std::to_string(lag) + ", save every " + std::to_string(save_every));
    TempDir dir;
    TrainConfig cfg = small_run(7);
    cfg.lr = 1000.0f;
    cfg.save_every = save_every;
    cfg.readback_lag = lag;
    cfg.out_dir = dir.file("run");
    std::string msg;
    try {
      train(cfg);
    } catch (const Error& e) {
      msg = e.what();
    }
    ASSERT_NE(msg.find("training diverged"), std::string::npos) << msg;
    const size_t at = msg.find(" at step ");
    ASSERT_NE(at, std::string::npos) << msg;
    const std::string step = msg.substr(at, msg.find(' ', at + 9) - at);
    if (first.empty()) first = step;
    EXPECT_EQ(step, first) << "every lag must name the same step: " << msg;
    EXPECT_NE(msg.find(cfg.out_dir), std::string::npos) << "the message names the run directory";
    EXPECT_FALSE(fs::exists(cfg.out_dir + "/model.safetensors")) << "no epoch finished";
    if (save_every == 0) {
      EXPECT_NE(msg.find("No checkpoint was saved"), std::string::npos) << msg;
      EXPECT_FALSE(fs::exists(cfg.out_dir + "/resume.safetensors"));
      continue;
    }
    EXPECT_NE(msg.find("The last good checkpoint in " + cfg.out_dir + " is kept"),
              std::string::npos) << msg;
    ASSERT_TRUE(fs::exists(cfg.out_dir + "/resume.safetensors"));
    const SafetensorsFile saved = load_safetensors(cfg.out_dir + "/resume.safetensors");
    ASSERT_FALSE(saved.tensors.empty());
    for (const auto& [name, t] : saved.tensors) {
      if (t.dtype != "F32") continue;
      std::vector<float> v(t.bytes.size() / 4);
      if (!v.empty()) std::memcpy(v.data(), t.bytes.data(), v.size() * 4);
      for (float x : v) ASSERT_TRUE(std::isfinite(x)) << name << " in the last save";
    }
  }
}

}  // namespace
}  // namespace tdrop
