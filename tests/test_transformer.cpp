// The Transformer zoo model and its layers: attention matches a direct per-head loop and
// treats tokens as a set (permuting them permutes its output), the zoo model's targetable
// layers are the blocks' six projections, a few SGD steps memorise a batch, bad settings are
// errors, targeted dropout trains and prunes it, and (on a GPU) a training step, with and
// without targeted dropout, matches the CPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/device.h"
#include "kernels/ops.h"
#include "kernels/targeted_dropout.h"
#include "layers/optimizer.h"
#include "layers/targeted.h"
#include "layers/transformer.h"
#include "models/registry.h"
#include "tests/expect_error.h"
#include "tests/grad_check.h"

namespace tdrop::testing {
namespace {

std::shared_ptr<Module> small_transformer(int64_t depth = 2) {
  nlohmann::json cfg = {{"input_shape", {1, 12, 12}}, {"patch", 3}, {"width", 16},
                        {"heads", 4},                 {"depth", depth}};
  auto m = build_model("transformer", cfg);
  m->reset_parameters(11);
  return m;
}

// Self-attention without position information is equivariant: permuting the tokens of the
// input permutes the tokens of the output the same way.
TEST(MultiHeadSelfAttention, PermutingTokensPermutesTheOutput) {
  std::mt19937_64 rng(fresh_seed());
  MultiHeadSelfAttention attention(8, 2);
  attention.reset_parameters(rng());
  const Tensor x = random_tensor({2, 5, 8}, rng, -1, 1, DType::F64);
  const std::vector<int64_t> perm = {3, 0, 4, 1, 2};
  Tensor xp = Tensor::empty({2, 5, 8}, DType::F64);
  const std::vector<double> xv = x.to_vector<double>();
  std::vector<double> xpv(xv.size());
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 5; ++t)
      for (int64_t c = 0; c < 8; ++c) xpv[(b * 5 + t) * 8 + c] = xv[(b * 5 + perm[t]) * 8 + c];
  for (auto& [name, p] : attention.named_parameters()) p.set_data(p.to(DType::F64));
  const std::vector<double> y = attention.forward(x).to_vector<double>();
  const std::vector<double> yp =
      attention.forward(Tensor::from_vector(xpv, {2, 5, 8})).to_vector<double>();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 5; ++t)
      for (int64_t c = 0; c < 8; ++c)
        EXPECT_NEAR(yp[(b * 5 + t) * 8 + c], y[(b * 5 + perm[t]) * 8 + c], 1e-12);
  // And it mixes tokens: the output of token 0 depends on token 1.
  std::vector<double> xv2 = xv;
  xv2[8] += 0.5;  // token 1 of batch 0
  const std::vector<double> y2 =
      attention.forward(Tensor::from_vector(xv2, {2, 5, 8})).to_vector<double>();
  double moved = 0;
  for (int c = 0; c < 8; ++c) moved += std::abs(y2[c] - y[c]);
  EXPECT_GT(moved, 1e-6);
}

// The attention's forward against a direct loop with its own weights: per head h,
// softmax(q_h k_h^T / sqrt(d_h)) v_h, the heads side by side, then the output projection.
TEST(MultiHeadSelfAttention, MatchesADirectPerHeadLoop) {
  std::mt19937_64 rng(fresh_seed());
  const int64_t B = 2, T = 5, W = 8, H = 2, D = W / H;
  MultiHeadSelfAttention attention(W, H);
  attention.reset_parameters(rng());
  std::map<std::string, std::vector<double>> p;
  for (auto& [name, t] : attention.named_parameters()) {
    t.set_data(t.to(DType::F64));
    p[name] = t.to_vector<double>();
  }
  const Tensor x = random_tensor({B, T, W}, rng, -2, 2, DType::F64);
  const std::vector<double> xv = x.to_vector<double>(), y = attention.forward(x).to_vector<double>();
  // y = in W^T + b for one token's row `in` of width W.
  auto project = [&](const std::string& l, const double* in) {
    std::vector<double> out(p[l + ".bias"]);
    for (int64_t o = 0; o < W; ++o)
      for (int64_t i = 0; i < W; ++i) out[o] += p[l + ".weight"][o * W + i] * in[i];
    return out;
  };
  for (int64_t b = 0; b < B; ++b) {
    std::vector<std::vector<double>> q, k, v;
    for (int64_t t = 0; t < T; ++t) {
      const double* in = xv.data() + (b * T + t) * W;
      q.push_back(project("q", in));
      k.push_back(project("k", in));
      v.push_back(project("v", in));
    }
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> heads(W, 0.0);
      for (int64_t h = 0; h < H; ++h) {
        std::vector<double> s(T);
        double top = -INFINITY, total = 0;
        for (int64_t u = 0; u < T; ++u) {
          s[u] = 0;
          for (int64_t d = 0; d < D; ++d) s[u] += q[t][h * D + d] * k[u][h * D + d];
          s[u] /= std::sqrt(static_cast<double>(D));
          top = std::max(top, s[u]);
        }
        for (double& e : s) total += e = std::exp(e - top);
        for (int64_t u = 0; u < T; ++u)
          for (int64_t d = 0; d < D; ++d) heads[h * D + d] += s[u] / total * v[u][h * D + d];
      }
      const std::vector<double> want = project("out", heads.data());
      for (int64_t c = 0; c < W; ++c)
        EXPECT_NEAR(y[(b * T + t) * W + c], want[c], 1e-12) << b << "," << t << "," << c;
    }
  }
}

// Layer norm's forward against its definition, (x - mean) / sqrt(var + eps) * gamma + beta with
// the biased variance, per row: random rows, a row whose variance is near eps (so eps shows in
// the value), and a constant row (all of it beta).
TEST(LayerNorm, ForwardMatchesTheDefinition) {
  std::mt19937_64 rng(fresh_seed());
  const int64_t R = 4, D = 7;
  const double eps = 1e-5;
  std::vector<double> xv = random_tensor({R, D}, rng, -3, 3, DType::F64).to_vector<double>();
  for (int64_t j = 0; j < D; ++j) {
    xv[2 * D + j] = 1.0 + 2e-3 * static_cast<double>(j % 2);  // variance about 1e-6
    xv[3 * D + j] = -0.75;
  }
  const Tensor gamma = random_tensor({D}, rng, 0.5, 2, DType::F64);
  const Tensor beta = random_tensor({D}, rng, -1, 1, DType::F64);
  const std::vector<double> g = gamma.to_vector<double>(), b = beta.to_vector<double>();
  const std::vector<double> y =
      layer_norm(Tensor::from_vector(xv, {R, D}), gamma, beta, eps).to_vector<double>();
  for (int64_t r = 0; r < R; ++r) {
    double mean = 0, var = 0;
    for (int64_t j = 0; j < D; ++j) mean += xv[r * D + j] / D;
    for (int64_t j = 0; j < D; ++j) var += (xv[r * D + j] - mean) * (xv[r * D + j] - mean) / D;
    for (int64_t j = 0; j < D; ++j) {
      const double want = (xv[r * D + j] - mean) / std::sqrt(var + eps) * g[j] + b[j];
      EXPECT_NEAR(y[r * D + j], want, 1e-12) << "row " << r << ", column " << j;
    }
  }
  // Near-eps row: without eps its entries would be +-1 before gamma; with it about +-0.3.
  EXPECT_LT(std::abs(y[2 * D] - b[0]) / g[0], 0.5);
}

// A block's forward against its pre-norm definition, composed from its own sub-layers:
//   h = x + attention(norm1(x)), y = h + fc2(relu(fc1(norm2(h)))).
TEST(TransformerZoo, BlockForwardFollowsItsDefinition) {
  std::mt19937_64 rng(fresh_seed());
  TransformerBlock block(8, 2, 12);
  block.reset_parameters(rng());
  const Tensor x = random_tensor({2, 5, 8}, rng, -1, 1, DType::F32);
  const Tensor got = block.forward(x);
  auto part = [&](const char* name, const Tensor& in) { return forward_child(block, name, in); };
  const Tensor h = add(x, part("attention", part("norm1", x)));
  const Tensor flat = reshape(part("norm2", h), {10, 8});
  const Tensor want = add(h, reshape(part("fc2", relu(part("fc1", flat))), {2, 5, 8}));
  ASSERT_EQ(got.shape(), want.shape());
  expect_close_l2(want, got, 1e-6, "transformer block");
}

// A product over an empty inner dimension is a sum of nothing: zeros, not uninitialised memory;
// shapes that do not fit are errors naming both.
TEST(Bmm, EmptyInnerDimensionGivesZerosAndBadShapesAreErrors) {
  for (int rep = 0; rep < 3; ++rep) {  // fresh allocations, whatever they held before
    const Tensor y = bmm(Tensor::empty({2, 3, 0}), Tensor::empty({2, 0, 4}));
    EXPECT_EQ(y.shape(), (Shape{2, 3, 4}));
    EXPECT_EQ(y.to_vector<float>(), std::vector<float>(24, 0.0f));
  }
  expect_error([] { bmm(Tensor::zeros({2, 3, 4}), Tensor::zeros({2, 5, 6})); },
               {"bmm", "[2, 3, 4]", "[2, 5, 6]", "[B, K, N]"});
  expect_error([] { bmm(Tensor::zeros({2, 3, 4}), Tensor::zeros({3, 5, 4}), true); },
               {"bmm", "[B, N, K]"});
  expect_error([] { softmax(Tensor::zeros({3, 0})); }, {"softmax", "non-empty last axis"});
  expect_error([] { layer_norm(Tensor::zeros({3, 4}), Tensor::zeros({3}), Tensor::zeros({3})); },
               {"layer_norm", "gamma and beta of shape [4]"});
}

TEST(TransformerZoo, TargetableLayersAreTheSixProjectionsOfEachBlock) {
  auto model = small_transformer(3);
  std::vector<std::string> names;
  for (auto& [name, layer] : targetable_layers(*model)) names.push_back(name);
  std::vector<std::string> want;
  for (int b = 0; b < 3; ++b)
    for (const char* l : {"attention.q", "attention.k", "attention.v", "attention.out", "fc1", "fc2"})
      want.push_back(std::to_string(b + 1) + "." + l);  // 0 is the patch embedding
  EXPECT_EQ(names, want) << "the patch stem and the classifier are not targeted";
}

TEST(TransformerZoo, ConfigIsCompletedAndBadSettingsAreErrors) {
  nlohmann::json cfg = nlohmann::json::object();
  build_model("transformer", cfg);
  EXPECT_EQ(cfg["input_shape"], nlohmann::json({1, 28, 28}));
  EXPECT_EQ(cfg["patch"], 4);
  EXPECT_EQ(cfg["width"], 64);
  EXPECT_EQ(cfg["mlp_width"], 128);
  EXPECT_EQ(cfg["depth"], 4);
  EXPECT_EQ(cfg["heads"], 4);
  EXPECT_EQ(cfg["num_classes"], 10);
  // The position embedding starts small, U(+-0.02), beside the patches' embedding.
  auto model4 = build_model("transformer", cfg);
  model4->reset_parameters(3);
  float largest = 0;
  for (auto& [name, t] : model4->named_parameters())
    if (name == "0.position")
      for (float x : t.to_vector<float>()) largest = std::max(largest, std::fabs(x));
  EXPECT_GT(largest, 0.019f);
  EXPECT_LE(largest, 0.02f);
  auto build = [](nlohmann::json c) { return [c]() mutable { build_model("transformer", c); }; };
  expect_error(build({{"patch", 5}}), {"transformer", "patch 5", "does not tile", "[1, 28, 28]"});
  expect_error(build({{"input_shape", {1, 28, 30}}}),
               {"transformer", "patch 4", "does not tile", "[1, 28, 30]"});
  expect_error(build({{"input_shape", {1, 0, 28}}}), {"transformer", "input_shape", "[1, 0, 28]"});
  expect_error(build({{"mlp_width", 0}}), {"transformer", "mlp_width 0"});
  expect_error(build({{"width", 30}, {"heads", 4}}),
               {"transformer", "width 30", "multiple of heads 4"});
  expect_error(build({{"depth", 0}}), {"transformer", "depth 0"});
  expect_error(build({{"input_shape", {28, 28}}}), {"transformer", "input_shape"});
  auto model = small_transformer();
  // Only the images it was built for: more pixels than the patches tile (their last rows would
  // be dropped), another layout of as many patches, another count of patches.
  for (const Shape& other : {Shape{2, 1, 13, 13}, Shape{2, 1, 3, 48}, Shape{2, 1, 15, 15}})
    expect_error([&] { model->forward(Tensor::zeros(other)); },
                 {"PatchEmbedding", shape_str(other), "[batch, 1, 12, 12]", "built for"});
  expect_error([] { LayerNorm(0); }, {"LayerNorm", "width must be positive"});
  expect_error([] { LayerNorm(4, 0.0); }, {"LayerNorm(4)", "eps must be positive"});
  expect_error([] { TransformerBlock(8, 2, 0); },
               {"TransformerBlock", "mlp width must be positive"});
  expect_error([] { MultiHeadSelfAttention(10, 3); }, {"MultiHeadSelfAttention", "width 10"});
}

// SGD steps on one small random batch: the loss must fall (the net memorises it). At lr 0.01
// over 40 steps it falls steadily: the last loss was at most 0.55 of the first over 400 random
// batches, where 12 steps at lr 0.05 ended above 0.7 for a few batches in a hundred (and more
// steps at that rate can climb again).
TEST(TransformerZoo, LossFalls) {
  auto model = small_transformer();
  model->train();
  std::mt19937_64 rng(fresh_seed());
  const Tensor x = random_tensor({8, 1, 12, 12}, rng, -1, 1, DType::F32);
  const Tensor y = Tensor::from_vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7}, {8});
  SGD opt(model->parameters(), 0.01f, 0.9f);
  std::vector<double> losses;
  const int64_t nodes = live_autograd_nodes();
  for (int s = 0; s < 40; ++s) {
    opt.zero_grad();
    Tensor loss = cross_entropy(model->forward(x), y);
    losses.push_back(loss.item());
    ASSERT_TRUE(std::isfinite(losses.back())) << "step " << s;
    loss.backward();
    for (auto& [name, p] : model->named_parameters())
      ASSERT_TRUE(p.grad().defined()) << name << " got no gradient";
    opt.step();
  }
  EXPECT_LT(losses.back(), 0.7 * losses.front()) << ::testing::PrintToString(losses);
  EXPECT_EQ(live_autograd_nodes(), nodes) << "training steps leak their graphs";
}

// The model's weights with, in each row of every targetable layer, the k smallest |w| zeroed
// (ties to the lower column), as eval-mode targeted dropout promises to remove them.
void zero_targeted_by_hand(Module& model, double gamma) {
  for (auto& [name, layer] : targetable_layers(model)) {
    Tensor& w = layer->weight();
    std::vector<float> v = w.to_vector<float>();
    const int64_t rows = w.size(0), n = w.numel() / rows, k = td_count(gamma, n);
    for (int64_t r = 0; r < rows; ++r) {
      float* row = v.data() + r * n;
      std::vector<int64_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return std::fabs(row[a]) < std::fabs(row[b]);
      });
      for (int64_t i = 0; i < k; ++i) row[order[i]] = 0.0f;
    }
    w.copy_(Tensor::from_vector(v, w.shape()));
  }
}

// With targeted dropout, training forwards use W' and evaluation removes the targeted set:
// half of every projection's weights are zero in eval mode, and the eval forward is that of
// the same model with those weights zeroed by hand.
TEST(TransformerZoo, TargetedDropoutTrainsAndRemovesTheTargetedSetInEval) {
  auto model = small_transformer();
  TargetedDropoutConfig td;
  td.mode = TargetedDropoutConfig::Mode::Weight;
  td.gamma = 0.5f;
  td.alpha = 0.5f;
  configure_targeted_dropout(*model, td);
  model->train();
  model->set_rng(3, 0);
  std::mt19937_64 rng(fresh_seed());
  const Tensor x = random_tensor({4, 1, 12, 12}, rng, -1, 1, DType::F32);
  Tensor loss = cross_entropy(model->forward(x), Tensor::from_vector<int64_t>({1, 2, 3, 4}, {4}));
  loss.backward();
  EXPECT_TRUE(std::isfinite(loss.item()));
  model->eval();
  const SparsityReport sp = measure_sparsity(*model);
  EXPECT_EQ(sp.targeted_zero * 2, sp.targeted_total);  // rows of 16 and 32: k = n / 2 exactly
  EXPECT_GT(sp.all_total, sp.targeted_total);
  auto pruned = small_transformer();  // the same weights: no optimizer step was taken
  zero_targeted_by_hand(*pruned, td.gamma);
  pruned->eval();
  const std::vector<float> want = pruned->forward(x).to_vector<float>();
  EXPECT_EQ(model->forward(x).to_vector<float>(), want);
  EXPECT_NE(small_transformer()->forward(x).to_vector<float>(), want) << "nothing was removed";
}

TEST(CudaTransformer, TrainingStepMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU: CPU<->CUDA comparison skipped";
  std::mt19937_64 rng(fresh_seed());
  const Tensor x = random_tensor({6, 1, 12, 12}, rng, -1, 1, DType::F32);
  const Tensor y = Tensor::from_vector<int64_t>({0, 1, 2, 3, 4, 5}, {6});
  std::vector<ModelStep> steps;
  for (Device d : {Device::CPU, Device::CUDA}) {
    auto model = small_transformer();
    steps.push_back(model_step_on(d, *model, x, y));
  }
  const double loss = steps[0].loss.item();
  EXPECT_NEAR(steps[1].loss.item(), loss, 1e-4 * std::abs(loss) + 1e-6);
  for (size_t i = 0; i < steps[0].grads.size(); ++i)
    expect_close_l2(steps[0].grads[i], steps[1].grads[i], 1e-3,
                    "gradient of parameter " + std::to_string(i));
}

// Targeted dropout in a CUDA training step, through the grouped launch training uses and
// through each layer's own launch: the masks are the CPU's bit for bit, so every targeted
// weight's gradient is zero exactly where the CPU's is, and all gradients agree as above.
TEST(CudaTransformer, TargetedDropoutStepMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU: CPU<->CUDA comparison skipped";
  std::mt19937_64 rng(fresh_seed());
  const Tensor x = random_tensor({6, 1, 12, 12}, rng, -1, 1, DType::F32);
  const Tensor y = Tensor::from_vector<int64_t>({0, 1, 2, 3, 4, 5}, {6});
  TargetedDropoutConfig td;
  td.mode = TargetedDropoutConfig::Mode::Weight;
  td.gamma = 0.5;
  td.alpha = 0.5f;
  const uint64_t seed = 7, step = 3;
  for (bool grouped : {true, false}) {
    SCOPED_TRACE(grouped ? "grouped launch" : "a launch per layer");
    std::vector<ModelStep> steps;
    std::vector<std::vector<Tensor>> targeted_grads;
    for (Device d : {Device::CPU, Device::CUDA}) {
      auto model = small_transformer();
      configure_targeted_dropout(*model, td);
      model->to(d);
      model->train();
      model->set_rng(seed, step);
      if (grouped) precompute_targeted_dropout(*model, seed, step);  // a no-op on the CPU
      steps.push_back(model_step_on(d, *model, x, y));
      targeted_grads.emplace_back();
      for (auto& [name, layer] : targetable_layers(*model))
        targeted_grads.back().push_back(layer->weight().grad());
    }
    finish_targeted_dropout_checks();
    ASSERT_EQ(targeted_grads[0].size(), 12u);
    for (size_t l = 0; l < targeted_grads[0].size(); ++l) {
      const std::vector<float> c = targeted_grads[0][l].to_vector<float>();
      const std::vector<float> g = targeted_grads[1][l].to_vector<float>();
      ASSERT_EQ(c.size(), g.size());
      size_t zeros = 0, differ = 0;
      for (size_t i = 0; i < c.size(); ++i) {
        zeros += c[i] == 0.0f;
        differ += (c[i] == 0.0f) != (g[i] == 0.0f);
      }
      EXPECT_EQ(differ, 0u) << "targeted layer " << l << ": dropped entries differ";
      EXPECT_GT(zeros, c.size() / 8) << "targeted layer " << l << ": about a quarter dropped";
      expect_close_l2(targeted_grads[0][l], targeted_grads[1][l], 1e-3,
                      "gradient of targeted layer " + std::to_string(l));
    }
    const double loss = steps[0].loss.item();
    EXPECT_NEAR(steps[1].loss.item(), loss, 1e-4 * std::abs(loss) + 1e-6);
    for (size_t i = 0; i < steps[0].grads.size(); ++i)
      expect_close_l2(steps[0].grads[i], steps[1].grads[i], 1e-3,
                      "gradient of parameter " + std::to_string(i));
  }
}

}  // namespace
}  // namespace tdrop::testing
