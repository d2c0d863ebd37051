// Targeted dropout inside layers: which weights a Linear uses in training and eval, the masked
// gradient, the ramp schedule, whole-model configuration, sparsity reports and pruning.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/ops.h"
#include "layers/linear.h"
#include "layers/sequential.h"
#include "models/prune.h"
#include "models/registry.h"
#include "tests/expect_error.h"
#include "tests/grad_check.h"
#include "tests/td_test_util.h"

namespace tdrop::testing {
namespace {

TargetedDropoutConfig weight_td(double gamma, float alpha) {
  TargetedDropoutConfig c;
  c.mode = TargetedDropoutConfig::Mode::Weight;
  c.gamma = gamma;
  c.alpha = alpha;
  return c;
}

TEST(TargetedLinear, TrainingUsesWPrimeAndTheGradientIsMasked) {
  std::mt19937_64 rng(fresh_seed());
  Linear layer(40, 6);
  layer.reset_parameters(3);
  layer.targeted().configure(weight_td(0.5f, 0.5f), "fc", 0);
  layer.set_rng(11, 5);
  const Tensor x = random_tensor({4, 40}, rng, -1, 1, DType::F32);
  Tensor y = layer.forward(x);
  sum(y).backward();
  const std::vector<float> g = layer.weight().grad().to_vector<float>();
  const std::vector<float> w = layer.weight().to_vector<float>();
  // W' as the CPU reference draws it for this layer's seed, step and index.
  TdOutput ref;
  targeted_dropout_reference(make_task(w, 6, 40, 0.5, 0.5f, false, td_stream(5, 0), ref), 11);
  int dropped = 0;
  for (int r = 0; r < 6; ++r) {
    std::vector<float> mag(w.begin() + r * 40, w.begin() + r * 40 + 40);
    for (float& m : mag) m = std::fabs(m);
    std::nth_element(mag.begin(), mag.begin() + 19, mag.end());
    const float kth = mag[19];  // the row's 20th smallest |w|: k = 20 are targeted
    int row_dropped = 0;
    for (int c = 0; c < 40; ++c) {
      const bool kept = mask_bit(ref.mask, 40, r, c);
      EXPECT_EQ(g[r * 40 + c] != 0.0f, kept) << r << "," << c;  // dropped: no gradient
      if (kept) continue;
      ++row_dropped;
      EXPECT_LE(std::fabs(w[r * 40 + c]), kth) << "dropped an untargeted entry " << r << "," << c;
    }
    EXPECT_LE(row_dropped, 20) << "row " << r;
    dropped += row_dropped;
  }
  EXPECT_GT(dropped, 20);   // alpha 0.5 of 120 targeted: about 60
  EXPECT_LT(dropped, 100);
  // The forward pass used W': y = x W'^T + b. Kept entries get the plain gradient sum_b x[b, c].
  const std::vector<float> xv = x.to_vector<float>(), yv = y.to_vector<float>();
  const std::vector<float> b = layer.bias().to_vector<float>();
  for (int i = 0; i < 4; ++i)
    for (int r = 0; r < 6; ++r) {
      double want = b[r];
      for (int c = 0; c < 40; ++c) want += double(xv[i * 40 + c]) * ref.w_out[r * 40 + c];
      EXPECT_NEAR(yv[i * 6 + r], want, 1e-5) << i << "," << r;
    }
  for (int c = 0; c < 40; ++c) {
    double col = 0;
    for (int i = 0; i < 4; ++i) col += xv[i * 40 + c];
    for (int r = 0; r < 6; ++r) {
      if (g[r * 40 + c] != 0.0f) {
        EXPECT_NEAR(g[r * 40 + c], col, 1e-4);
      }
    }
  }
}

// configure_targeted_dropout numbers the targeted layers in model order, and layer i draws
// from its own stream td_stream(step, i): two layers never repeat each other's draws.
TEST(TargetedModel, EachLayerDrawsFromItsOwnStream) {
  nlohmann::json cfg = nlohmann::json::object();
  auto model = build_model("mlp", cfg);
  model->reset_parameters(4);
  configure_targeted_dropout(*model, weight_td(0.5, 0.5f));
  const uint64_t seed = fresh_seed(), step = 9;
  SCOPED_TRACE("seed " + std::to_string(seed));
  uint64_t index = 0;
  for (auto& [name, layer] : targetable_layers(*model)) {
    const Tensor& weight = layer->weight();
    const std::vector<float> w = weight.to_vector<float>();
    const int64_t rows = weight.size(0), n = weight.size(1);
    const std::vector<float> got =
        layer->targeted().effective(weight, true, seed, step).to_vector<float>();
    TdOutput ref;
    targeted_dropout_reference(
        make_task(w, rows, n, 0.5, 0.5f, false, td_stream(step, index), ref), seed);
    EXPECT_EQ(got, ref.w_out) << "layer " << name << " (targeted layer " << index << ")";
    ++index;
  }
  EXPECT_EQ(index, 2u);
}

// A W' precomputed for one step (the whole-model launch) serves that step's forward once; any
// other step computes its own.
TEST(TargetedLinear, PrecomputedWPrimeServesOnlyItsStepAndOnlyOnce) {
  Linear layer(40, 6);
  layer.reset_parameters(3);
  layer.targeted().configure(weight_td(0.5, 0.5f), "fc", 1);
  const Tensor& weight = layer.weight();
  const Tensor marked = Tensor::full({6, 40}, 7.0);
  const Tensor mask = Tensor::zeros({6, mask_words_per_row(40) * 4}, DType::U8);
  TdOutput ref;
  const std::vector<float> w = weight.to_vector<float>();
  targeted_dropout_reference(make_task(w, 6, 40, 0.5, 0.5f, false, td_stream(6, 1), ref), 11);
  layer.targeted().set_precomputed(marked, mask, 5);
  EXPECT_EQ(layer.targeted().effective(weight, true, 11, 6).to_vector<float>(), ref.w_out)
      << "step 6 used the W' precomputed for step 5";
  layer.targeted().set_precomputed(marked, mask, 6);
  EXPECT_EQ(layer.targeted().effective(weight, true, 11, 6).to_vector<float>(),
            std::vector<float>(240, 7.0f));
  EXPECT_EQ(layer.targeted().effective(weight, true, 11, 6).to_vector<float>(), ref.w_out)
      << "the precomputed W' was used twice";
}

// The untargeted dropout baselines (`--dropout weight|unit --dropout-rate P`, the paper's
// comparison): every weight (or row) is a candidate, the kept ones are scaled by 1/(1 - P) in
// training, and eval uses every weight unscaled.
TEST(TargetedLinear, UntargetedDropoutBaselinesRescaleInTrainingAndKeepAllInEval) {
  for (bool unit : {false, true}) {
    SCOPED_TRACE(unit ? "unit dropout" : "weight dropout");
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    Linear layer(40, 64, false);  // 64 rows: unit mode drops none with p = 0.75^64
    layer.reset_parameters(seed);
    TargetedDropoutConfig c;
    c.mode = unit ? TargetedDropoutConfig::Mode::Unit : TargetedDropoutConfig::Mode::Weight;
    c.gamma = 1.0;
    c.alpha = 0.25f;
    c.rescale = true;
    c.keep_all_in_eval = true;
    layer.targeted().configure(c, "fc", 0);
    layer.set_rng(seed, 3);
    const Tensor x = random_tensor({5, 40}, rng, -1, 1, DType::F32);
    Tensor y = layer.forward(x);
    sum(y).backward();
    const std::vector<float> w = layer.weight().to_vector<float>();
    TdOutput ref;
    targeted_dropout_reference(make_task(w, 64, 40, 1.0, 0.25f, unit, td_stream(3, 0), ref),
                               seed);
    const std::vector<float> xv = x.to_vector<float>(), yv = y.to_vector<float>();
    const std::vector<float> g = layer.weight().grad().to_vector<float>();
    int dropped = 0;
    for (int r = 0; r < 64; ++r) {
      int row_dropped = 0;
      for (int c2 = 0; c2 < 40; ++c2) {
        const bool kept = mask_bit(ref.mask, 40, r, c2);
        row_dropped += !kept;
        double col = 0;  // d sum(y) / dW'[r, c2] = sum_b x[b, c2], times the 1/(1 - P) scale
        for (int i = 0; i < 5; ++i) col += xv[i * 40 + c2];
        EXPECT_NEAR(g[r * 40 + c2], kept ? col / 0.75 : 0.0, 1e-4) << r << "," << c2;
      }
      if (unit) {
        EXPECT_TRUE(row_dropped == 0 || row_dropped == 40) << "row " << r;
      }
      dropped += row_dropped;
      for (int i = 0; i < 5; ++i) {
        double want = 0;
        for (int c2 = 0; c2 < 40; ++c2) want += double(xv[i * 40 + c2]) * ref.w_out[r * 40 + c2];
        EXPECT_NEAR(yv[i * 64 + r], want / 0.75, 1e-4) << i << "," << r;
      }
    }
    EXPECT_GT(dropped, 0) << "P = 0.25 dropped nothing";
    EXPECT_LT(dropped, 64 * 40) << "P = 0.25 dropped everything";
    layer.eval();
    const std::vector<float> ye = layer.forward(x).to_vector<float>();
    for (int i = 0; i < 5; ++i)
      for (int r = 0; r < 64; ++r) {
        double want = 0;
        for (int c2 = 0; c2 < 40; ++c2) want += double(xv[i * 40 + c2]) * w[r * 40 + c2];
        EXPECT_NEAR(ye[i * 64 + r], want, 1e-4) << "eval " << i << "," << r;
      }
  }
}

// The L1 baseline's subgradient: grad += l1 * sign(w), with sign(0) = sign(-0) = 0.
TEST(L1Penalty, AddsL1TimesTheSignOfEachWeight) {
  Tensor g = Tensor::from_vector<float>({1, 1, 1, 1, -2}, {5});
  const Tensor w = Tensor::from_vector<float>({-2, 0, 3, -0.0f, 1e-30f}, {5});
  add_l1_subgradient_(g, w, 0.25);
  EXPECT_EQ(g.to_vector<float>(), (std::vector<float>{0.75f, 1, 1.25f, 1, -1.75f}));
}

// Two rows of 8 whose eval W' is easy to tell apart from W, targeted with gamma 0.5, in eval.
void eval_example(Linear& layer) {
  layer.weight().copy_(
      Tensor::from_vector<float>({1, -2, 3, -4, 5, -6, 7, -8, 8, 7, 6, 5, 4, 3, 2, 1}, {2, 8}));
  layer.targeted().configure(weight_td(0.5f, 0.3f), "fc", 0);
  layer.eval();
}

TEST(TargetedLinear, EvalRemovesTheTargetedSetUnlessKeepAll) {
  Linear layer(8, 2, false);
  eval_example(layer);
  const Tensor x = Tensor::full({1, 8}, 1.0);
  // Eval removes the 4 smallest |w| of each row: row 0 keeps 5,-6,7,-8; row 1 keeps 8,7,6,5.
  EXPECT_EQ(layer.forward(x).to_vector<float>(), (std::vector<float>{-2.0f, 26.0f}));
  TargetedDropoutConfig keep = weight_td(0.5f, 0.3f);
  keep.keep_all_in_eval = true;
  layer.targeted().configure(keep, "fc", 0);
  EXPECT_EQ(layer.forward(x).to_vector<float>(), (std::vector<float>{-4.0f, 36.0f}));
}

// An evaluation computes each layer's eval W' once: while its cache lives, forward passes use
// the W' of the weights it saw (a change made behind its back does not show), the training
// mode and other tensors bypass it, and once it ends the next forward sees the new weights.
TEST(TargetedLinear, EvalWeightCacheHoldsWPrimeForItsScope) {
  Linear layer(8, 2, false);
  Tensor w = layer.weight();
  eval_example(layer);
  const Tensor x = Tensor::full({1, 8}, 1.0);
  const std::vector<float> before{-2.0f, 26.0f};  // as EvalRemovesTheTargetedSetUnlessKeepAll
  {
    const EvalWeightCache cache(layer);
    EXPECT_EQ(layer.forward(x).to_vector<float>(), before);
    w.copy_(Tensor::from_vector<float>({1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8}, {2, 8}));
    EXPECT_EQ(layer.forward(x).to_vector<float>(), before);  // cached
    // Another tensor is not the cached one's source: computed afresh (5+6+7+8 = 26 per row).
    const Tensor other = layer.targeted().effective(w.clone(), false, 0, 0);
    EXPECT_EQ(matmul(x, other.transpose(0, 1)).to_vector<float>(), (std::vector<float>{26, 26}));
    // Training draws from the weights as they are: 5+6+7+8 plus whichever of 1..4 stay.
    layer.train();
    const float y0 = layer.forward(x).to_vector<float>()[0];
    EXPECT_GE(y0, 26.0f);
    EXPECT_LE(y0, 36.0f);
    layer.eval();
  }
  EXPECT_EQ(layer.forward(x).to_vector<float>(), (std::vector<float>{26.0f, 26.0f}));
  // keep_all: nothing to cache, the weights are used as they are; configuring anew also drops
  // a cached W' (computed under the old settings).
  TargetedDropoutConfig keep = weight_td(0.5f, 0.3f);
  keep.keep_all_in_eval = true;
  const EvalWeightCache cache(layer);
  EXPECT_EQ(layer.forward(x).to_vector<float>(), (std::vector<float>{26.0f, 26.0f}));
  layer.targeted().configure(keep, "fc", 0);
  EXPECT_EQ(layer.forward(x).to_vector<float>(), (std::vector<float>{36.0f, 36.0f}));
  const EvalWeightCache nothing(layer);
  EXPECT_EQ(layer.forward(x).to_vector<float>(), (std::vector<float>{36.0f, 36.0f}));
}

// A NaN weight in a later layer makes the cache's construction fail naming that layer, and
// leaves no earlier layer cached: its eval forward follows its weights again.
TEST(TargetedLinear, EvalWeightCacheThatFailsCachesNothing) {
  Sequential model;
  model.add(std::make_shared<Linear>(8, 2, false));
  model.add(std::make_shared<Linear>(2, 2, false));
  configure_targeted_dropout(model, weight_td(0.5f, 0.3f));
  model.eval();
  auto& first = static_cast<Linear&>(*model.children()[0].second);
  eval_example(first);
  first.targeted().configure(weight_td(0.5f, 0.3f), "0", 0);
  Tensor w1 = static_cast<Linear&>(*model.children()[1].second).weight();
  w1.copy_(Tensor::from_vector<float>({1, NAN, 3, 4}, {2, 2}));
  expect_error([&] { const EvalWeightCache cache(model); }, {"'1'", "non-finite"});
  const Tensor x = Tensor::full({1, 8}, 1.0);
  EXPECT_EQ(first.forward(x).to_vector<float>(), (std::vector<float>{-2.0f, 26.0f}));
  first.weight().copy_(Tensor::full({2, 8}, 1.0));
  EXPECT_EQ(first.forward(x).to_vector<float>(), (std::vector<float>{4.0f, 4.0f}));  // 4 of 8 kept
}

TEST(TargetedLinear, BadRatesAreErrorsNamingTheLayer) {
  Linear layer(4, 4);
  for (auto [g, a] : {std::pair{1.5f, 0.5f}, std::pair{0.5f, -0.1f}, std::pair{NAN, 0.5f}}) {
    try {
      layer.targeted().configure(weight_td(g, a), "blocks.3.fc", 0);
      FAIL() << "accepted gamma " << g << " alpha " << a;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("blocks.3.fc"), std::string::npos) << e.what();
    }
  }
}

TEST(TargetedLinear, NonFiniteWeightIsAnErrorNamingTheLayer) {
  Linear layer(4, 2);
  Tensor w = layer.weight();
  w.copy_(Tensor::from_vector<float>({1, 2, NAN, 4, 5, 6, 7, 8}, {2, 4}));
  layer.targeted().configure(weight_td(0.5f, 0.5f), "hidden", 0);
  try {
    layer.forward(Tensor::full({1, 4}, 1.0));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("hidden"), std::string::npos) << e.what();
  }
}

TEST(TargetedRamp, FollowsTheReferenceSchedule) {
  TargetedDropoutConfig c = weight_td(0.8f, 0.6f);
  c.ramp = true;
  c.ramp_steps = 1000;
  EXPECT_FLOAT_EQ(c.alpha_at(0), 0.0f);
  EXPECT_FLOAT_EQ(c.alpha_at(500), 0.3f);
  EXPECT_FLOAT_EQ(c.alpha_at(2000), 0.6f);
  EXPECT_FLOAT_EQ(c.gamma_at(0), 0.0f);
  EXPECT_NEAR(c.gamma_at(250), 0.95 * 0.8 * 0.5, 1e-6);
  EXPECT_NEAR(c.gamma_at(500), 0.95 * 0.8, 1e-6);
  EXPECT_NEAR(c.gamma_at(750), 0.8 * 0.975, 1e-6);
  EXPECT_NEAR(c.gamma_at(1000), 0.8, 1e-6);
  EXPECT_NEAR(c.gamma_at(5000), 0.8, 1e-6);
  c.ramp = false;
  EXPECT_FLOAT_EQ(c.gamma_at(0), 0.8f);
  EXPECT_FLOAT_EQ(c.alpha_at(0), 0.6f);
}

// With T = 1 the ramp has reached gamma at step 1 (and alpha with it); odd and even T end on
// gamma at step T exactly.
TEST(TargetedRamp, ReachesGammaAtStepT) {
  for (int64_t T : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{40000}}) {
    TargetedDropoutConfig c = weight_td(0.9, 0.7f);
    c.ramp = true;
    c.ramp_steps = T;
    EXPECT_EQ(c.gamma_at(0), 0.0) << T;
    EXPECT_DOUBLE_EQ(c.gamma_at(T), 0.9) << T;
    EXPECT_FLOAT_EQ(c.alpha_at(T), 0.7f) << T;
    EXPECT_LT(c.gamma_at(T - 1), 0.9) << T;
  }
}

// gamma is the decimal the user typed: 0.9 of a 300-entry row is 270 entries (as a float,
// 0.9f = 0.89999997 would give 269; 0.57 * 300 is 170.99999999999997 in doubles), in training,
// in eval, and through a checkpoint's config.
TEST(TargetedLinear, DecimalGammaTargetsTheDecimalCount) {
  for (double gamma : {0.29, 0.41, 0.57, 0.58, 0.69, 0.7, 0.82, 0.9, 0.95}) {
    SCOPED_TRACE(gamma);
    const int64_t want = static_cast<int64_t>(std::llround(gamma * 1000)) * 300 / 1000;
    TargetedDropoutConfig c = weight_td(gamma, 0.5f);
    const TargetedDropoutConfig back = td_config_from_json(td_config_to_json(c));
    for (const TargetedDropoutConfig& cfg : {c, back}) {
      TargetedWeight tw;
      tw.configure(cfg, "fc", 0);
      const Tensor w = Tensor::zeros({4, 300});
      EXPECT_EQ(tw.plan(w, true, 7).k, want);
      EXPECT_EQ(tw.plan(w, false, 7).k, want);
    }
  }
}

TEST(TargetedModel, MlpTargetsBothHiddenLayersAndPrunesThem) {
  nlohmann::json cfg = {{"td", td_config_to_json(weight_td(0.75f, 0.66f))}};
  auto model = build_model("mlp", cfg);
  model->reset_parameters(1);
  const auto layers = targetable_layers(*model);
  ASSERT_EQ(layers.size(), 2u);  // 784->300 and 300->100; the classifier is not targeted
  EXPECT_EQ(layers[0].first, "1");
  EXPECT_EQ(layers[1].first, "3");
  EXPECT_TRUE(layers[0].second->targeted().enabled());
  model->eval();
  SparsityReport sp = measure_sparsity(*model);  // eval removes floor(0.75 n) per row
  EXPECT_EQ(sp.targeted_total, 300 * 784 + 100 * 300);
  EXPECT_EQ(sp.targeted_zero, 300 * 588 + 100 * 225);
  prune_model(*model, TargetedDropoutConfig::Mode::Weight, 0.9);
  sp = measure_sparsity(*model);
  EXPECT_EQ(sp.targeted_zero, 300 * 705 + 100 * 270);
  EXPECT_EQ(sp.all_total, 300 * 784 + 100 * 300 + 10 * 100);  // weights only: no biases
  EXPECT_EQ(sp.all_zero, sp.targeted_zero);  // the classifier keeps every weight
  // Unit pruning zeroes whole rows: half of each layer's, each adding the 79 (or 30) entries
  // the weight pruning had kept.
  prune_model(*model, TargetedDropoutConfig::Mode::Unit, 0.5);
  sp = measure_sparsity(*model);
  EXPECT_EQ(sp.targeted_zero, 300 * 705 + 150 * 79 + 100 * 270 + 50 * 30);
  for (const auto& [name, layer] : layers) {
    const std::vector<float> w = layer->weight().to_vector<float>();
    const int64_t rows = layer->weight().size(0), n = layer->weight().size(1);
    int64_t zero_rows = 0;
    for (int64_t r = 0; r < rows; ++r)
      zero_rows += std::all_of(w.begin() + r * n, w.begin() + (r + 1) * n,
                               [](float x) { return x == 0.0f; });
    EXPECT_EQ(zero_rows, rows / 2) << "layer " << name;
  }
  // A fraction outside [0, 1], or no mode, is an error that leaves the weights alone.
  const std::vector<float> before = layers[0].second->weight().to_vector<float>();
  expect_error([&] { prune_model(*model, TargetedDropoutConfig::Mode::Weight, 1.5); },
               {"prune: fraction 1.5 is outside [0, 1]"});
  expect_error([&] { prune_model(*model, TargetedDropoutConfig::Mode::Weight, -0.25); },
               {"prune: fraction -0.25 is outside [0, 1]"});
  expect_error([&] { prune_model(*model, TargetedDropoutConfig::Mode::None, 0.5); },
               {"prune: mode must be weight or unit"});
  EXPECT_EQ(layers[0].second->weight().to_vector<float>(), before);
  // Zeros outside the targeted layers count towards the sparsity of all weights only: a quarter
  // of the classifier's weights set to 0.
  bool found = false;
  for (auto& [name, p] : model->named_parameters()) {
    if (name != "5.weight") continue;
    found = true;
    std::vector<float> v = p.to_vector<float>();
    std::fill(v.begin(), v.begin() + 250, 0.0f);
    NoGradGuard no_grad;
    p.copy_(Tensor::from_vector(v, p.shape()));
  }
  ASSERT_TRUE(found) << "the classifier's weight is not named 5.weight";
  const SparsityReport zeroed = measure_sparsity(*model);
  EXPECT_EQ(zeroed.targeted_zero, sp.targeted_zero);
  EXPECT_EQ(zeroed.all_zero, sp.all_zero + 250);
  EXPECT_EQ(zeroed.all_total, sp.all_total);
}

}  // namespace
}  // namespace tdrop::testing
