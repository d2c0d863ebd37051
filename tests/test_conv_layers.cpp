// Convolutional layers and the CNN zoo on CPU: Conv2d/BatchNorm2d as modules (parameters,
// buffers, initialisation, state loading), the residual blocks, parameter counts against
// He et al. 2016, which layers each model lets targeted dropout touch, and a few SGD steps of
// resnet20 and vgg16 with falling loss.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <tuple>

#include "core/autograd.h"
#include "kernels/conv_ops.h"
#include "kernels/ops.h"
#include "layers/batch_norm.h"
#include "layers/conv2d.h"
#include "layers/linear.h"
#include "layers/optimizer.h"
#include "layers/pool.h"
#include "layers/residual.h"
#include "layers/sequential.h"
#include "layers/targeted.h"
#include "models/batch_norm_recalibration.h"
#include "models/registry.h"
#include "tests/grad_check.h"
#include "tests/expect_error.h"

namespace tdrop::testing {
namespace {

std::shared_ptr<Module> zoo(const std::string& name, nlohmann::json cfg = nlohmann::json::object()) {
  auto m = build_model(name, cfg);
  m->reset_parameters(7);
  return m;
}

// Every Conv2d below `m`, in registration (= forward) order.
void collect_convs(Module& m, std::vector<Conv2d*>& out) {
  if (auto* c = dynamic_cast<Conv2d*>(&m)) out.push_back(c);
  for (auto& [name, child] : m.children()) collect_convs(*child, out);
}
void collect_linears(Module& m, std::vector<Linear*>& out) {
  if (auto* l = dynamic_cast<Linear*>(&m)) out.push_back(l);
  for (auto& [name, child] : m.children()) collect_linears(*child, out);
}

// ---- layers --------------------------------------------------------------------------------

TEST(Conv2dLayer, ShapesInitialisationAndForward) {
  Conv2d conv(6, 8, 3, {.stride = 2, .padding = 1, .groups = 2, .init = InitScheme::KaimingUniform});
  ASSERT_EQ(conv.weight().shape(), (Shape{8, 3, 3, 3}));
  ASSERT_EQ(conv.bias().shape(), (Shape{8}));
  EXPECT_TRUE(conv.targetable());
  conv.reset_parameters(11);
  const float bound = std::sqrt(6.0f / 27.0f);  // fan_in = in/groups * 3 * 3
  float largest = 0;
  for (float w : conv.weight().to_vector<float>()) largest = std::max(largest, std::abs(w));
  EXPECT_LE(largest, bound);
  EXPECT_GT(largest, 0.8f * bound);
  for (float b : conv.bias().to_vector<float>()) EXPECT_LE(std::abs(b), 1 / std::sqrt(27.0f));
  std::mt19937_64 rng(fresh_seed());
  const Tensor x = random_tensor({2, 6, 9, 7}, rng, -1, 1, DType::F32);
  const Tensor y = conv.forward(x);
  EXPECT_EQ(y.shape(), (Shape{2, 8, 5, 4}));
  const Tensor want = conv2d(x, conv.weight(), conv.bias(), Conv2dParams::square(2, 1, 1, 2));
  EXPECT_EQ(y.to_vector<float>(), want.to_vector<float>());
  EXPECT_EQ(conv.describe(), "Conv2d(6 -> 8, 3x3, stride 2, pad 1, groups 2) [targetable]");
  expect_error([&] { conv.forward(Tensor::zeros({2, 5, 9, 7})); },
               {"Conv2d(6 -> 8)", "[2, 5, 9, 7]", "is not [N, 6, H, W]"});
  expect_error([] { Conv2d(6, 8, 3, {.groups = 4}); },
               {"Conv2d(6 -> 8)", "groups=4 must divide both channel counts"});
}

TEST(BatchNorm2dLayer, RunningStatisticsAreBuffersNotParameters) {
  BatchNorm2d bn(3);
  std::set<std::string> params, buffers;
  for (auto& [n, t] : bn.named_parameters()) params.insert(n);
  for (auto& [n, t] : bn.named_buffers()) buffers.insert(n);
  EXPECT_EQ(params, (std::set<std::string>{"weight", "bias"}));
  EXPECT_EQ(buffers, (std::set<std::string>{"running_mean", "running_var"}));
  EXPECT_EQ(bn.num_parameters(), 6);
  for (auto& [n, t] : bn.named_buffers()) EXPECT_FALSE(t.requires_grad()) << n;

  // Training moves the running statistics towards the batch's; eval then uses them.
  std::mt19937_64 rng(fresh_seed());
  const Tensor x = random_tensor({4, 3, 5, 5}, rng, 2, 4, DType::F32);
  bn.train();
  bn.forward(x);
  for (float m : bn.running_mean().to_vector<float>()) EXPECT_NEAR(m, 0.3f, 0.03f);  // 0.1 * ~3
  bn.eval();
  const Tensor y = bn.forward(x);
  const Tensor want = batch_norm2d(x, bn.weight(), bn.bias(), bn.running_mean().clone(),
                                   bn.running_var().clone(), false);
  EXPECT_EQ(y.to_vector<float>(), want.to_vector<float>());

  // reset_parameters restores the identity and fresh statistics.
  bn.reset_parameters(1);
  EXPECT_EQ(bn.running_mean().to_vector<float>(), std::vector<float>(3, 0.0f));
  EXPECT_EQ(bn.running_var().to_vector<float>(), std::vector<float>(3, 1.0f));

  // A layer's own momentum and eps are the ones it normalises with (resnet32-wide's 0.003, 1e-3).
  BatchNorm2d slow(3, 1e-3, 0.003);
  slow.train();
  slow.forward(x);
  const Tensor fresh_mean = Tensor::zeros({3}), fresh_var = Tensor::full({3}, 1.0);
  batch_norm2d(x, slow.weight(), slow.bias(), fresh_mean, fresh_var, true, 0.003, 1e-3);
  EXPECT_EQ(slow.running_mean().to_vector<float>(), fresh_mean.to_vector<float>());
  EXPECT_EQ(slow.running_var().to_vector<float>(), fresh_var.to_vector<float>());
  for (float m : slow.running_mean().to_vector<float>()) EXPECT_NEAR(m, 0.009f, 0.001f);
  slow.eval();
  EXPECT_EQ(slow.forward(x).to_vector<float>(),
            batch_norm2d(x, slow.weight(), slow.bias(), fresh_mean.clone(), fresh_var.clone(),
                         false, 0.003, 1e-3)
                .to_vector<float>());
}

// Recalibration (models/batch_norm_recalibration.h): the running statistics become the plain
// average, over the batches, of each batch's mean and unbiased variance of the layer's input,
// with the convolution before it run as in evaluation (its targeted set removed, no random
// drops); the layer keeps its momentum and the model is left in eval mode.
TEST(BatchNorm2dLayer, RecalibrationAveragesEachBatchsStatistics) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  ImageDataset data;
  data.count = 10, data.channels = 2, data.height = 5, data.width = 4;
  for (int64_t i = 0; i < data.count * 2 * 5 * 4; ++i)
    data.images.push_back(static_cast<uint8_t>(rng() % 256));
  data.labels.assign(10, 0);
  BatchLoader loader(data, 4, /*shuffle=*/false, 0, Device::CPU, {0.5f}, {0.25f});  // 4, 4, 2
  auto net = std::make_shared<Sequential>();
  auto conv = net->add(std::make_shared<Conv2d>(2, 3, 3, Conv2dOptions{.padding = 1}));
  auto bn = net->add(std::make_shared<BatchNorm2d>(3, 1e-5, 0.3));
  net->add(std::make_shared<ReLU>());
  net->reset_parameters(seed);
  TargetedDropoutConfig td;
  td.mode = TargetedDropoutConfig::Mode::Weight;
  td.gamma = td.alpha = 0.5;
  configure_targeted_dropout(*net, td);
  // Statistics of other weights, one of them overflowed: none of it may leak into the average.
  bn->running_mean().copy_(Tensor::full({3}, 7.0));
  bn->running_var().copy_(Tensor::full({3}, std::numeric_limits<double>::infinity()));
  net->train();
  ASSERT_EQ(recalibrate_batch_norm(*net, loader, 3), 1);
  EXPECT_FALSE(net->training());
  EXPECT_FALSE(bn->training());
  EXPECT_EQ(bn->momentum(), 0.3);

  double mean[3] = {}, var[3] = {};
  for (int64_t b = 0; b < 3; ++b) {
    const Tensor h = conv->forward(loader.batch(b).images);  // conv is in eval mode
    const std::vector<float> v = h.to_vector<float>();
    const int64_t batch = h.size(0), plane = 5 * 4, m = batch * plane;
    for (int c = 0; c < 3; ++c) {
      double sum = 0, sq = 0;
      for (int64_t i = 0; i < batch; ++i)
        for (int64_t j = 0; j < plane; ++j) sum += v[static_cast<size_t>((i * 3 + c) * plane + j)];
      const double mu = sum / static_cast<double>(m);
      for (int64_t i = 0; i < batch; ++i)
        for (int64_t j = 0; j < plane; ++j) {
          const double d = v[static_cast<size_t>((i * 3 + c) * plane + j)] - mu;
          sq += d * d;
        }
      mean[c] += mu / 3;
      var[c] += sq / static_cast<double>(m - 1) / 3;
    }
  }
  const std::vector<float> rm = bn->running_mean().to_vector<float>();
  const std::vector<float> rv = bn->running_var().to_vector<float>();
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(rm[c], mean[c], 1e-5 * std::max(1.0, std::abs(mean[c]))) << "channel " << c;
    EXPECT_NEAR(rv[c], var[c], 1e-5 * std::max(1.0, var[c])) << "channel " << c;
  }

  expect_error([&] { recalibrate_batch_norm(*net, loader, 4); },
               {"batch-norm recalibration: 4 batches asked, the data holds 3"});
  expect_error([&] { recalibrate_batch_norm(*net, loader, 0); },
               {"batch-norm recalibration: 0 batches asked"});
  expect_error([&] { bn->set_momentum(1.5); }, {"BatchNorm2d(3) 1: momentum 1.5 is outside [0, 1]"});
  Sequential plain;  // nothing to recalibrate
  plain.add(std::make_shared<Conv2d>(2, 3, 3));
  EXPECT_EQ(recalibrate_batch_norm(plain, loader, 1), 0);
}

TEST(BatchNorm2dLayer, LoadStateRestoresBuffersAndRequiresThem) {
  auto model = zoo("resnet20");
  std::map<std::string, Tensor> state;
  for (auto& [n, t] : model->named_parameters()) state[n] = t.clone();
  for (auto& [n, t] : model->named_buffers()) state[n] = Tensor::full(t.shape(), 0.5);
  auto other = zoo("resnet20");
  other->load_state(state, "test");
  for (auto& [n, t] : other->named_buffers())
    EXPECT_EQ(t.to_vector<float>(), std::vector<float>(t.numel(), 0.5f)) << n;
  state.erase("1.running_var");
  try {
    other->load_state(state, "ckpt.safetensors");
    FAIL() << "a missing buffer was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("buffer '1.running_var'"), std::string::npos) << e.what();
  }
}

// Sequential runs BatchNorm2d + ReLU as one fused pass; outputs and gradients are the bits of
// the modules applied one after the other.
TEST(SequentialLayer, FusedBatchNormReluEqualsTheModulesInTurn) {
  std::mt19937_64 rng(fresh_seed());
  auto net = std::make_shared<Sequential>();
  auto conv = net->add(std::make_shared<Conv2d>(2, 3, 3, Conv2dOptions{.padding = 1}));
  auto bn = net->add(std::make_shared<BatchNorm2d>(3));
  auto act = net->add(std::make_shared<ReLU>());
  net->reset_parameters(7);
  const Tensor x = random_tensor({4, 2, 5, 5}, rng, -1, 1, DType::F32);
  for (bool training : {true, false}) {
    SCOPED_TRACE(training ? "training" : "eval");
    net->train(training);
    std::vector<std::vector<double>> runs;
    for (bool fused : {true, false}) {
      const Tensor rm = bn->running_mean().clone(), rv = bn->running_var().clone();
      net->zero_grad();
      const Tensor y = fused ? net->forward(x) : act->forward(bn->forward(conv->forward(x)));
      sum(y).backward();
      runs.push_back(y.to_double_vector());
      runs.push_back(conv->weight().grad().to_double_vector());
      runs.push_back(bn->weight().grad().to_double_vector());
      runs.push_back(bn->running_mean().to_double_vector());
      bn->running_mean().copy_(rm);  // the second form starts from the same statistics
      bn->running_var().copy_(rv);
    }
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(runs[i], runs[i + 4]) << "item " << i;
  }
}

TEST(ResidualBlocks, ShapesAndShortcuts) {
  std::mt19937_64 rng(fresh_seed());
  const Tensor x = random_tensor({2, 16, 8, 8}, rng, -1, 1, DType::F32);
  BasicBlock same(16, 16, 1), down(16, 32, 2);
  PreActBlock pre_same(16, 16, 1, false), pre_proj(16, 32, 2, true);
  for (Module* m : std::initializer_list<Module*>{&same, &down, &pre_same, &pre_proj})
    m->reset_parameters(3);
  EXPECT_EQ(same.forward(x).shape(), (Shape{2, 16, 8, 8}));
  EXPECT_EQ(down.forward(x).shape(), (Shape{2, 32, 4, 4}));
  EXPECT_EQ(pre_same.forward(x).shape(), (Shape{2, 16, 8, 8}));
  EXPECT_EQ(pre_proj.forward(x).shape(), (Shape{2, 32, 4, 4}));
  // Option A adds no parameters; the projection adds a 1x1 convolution.
  EXPECT_EQ(down.num_parameters(), 16 * 32 * 9 + 32 * 32 * 9 + 4 * 32);
  EXPECT_EQ(pre_proj.num_parameters(), 2 * 16 + 16 * 32 + 16 * 32 * 9 + 2 * 32 + 32 * 32 * 9);
  // A basic block ends in a ReLU; a pre-activation block does not.
  for (float v : down.forward(x).to_vector<float>()) ASSERT_GE(v, 0.0f);
  expect_error([] { BasicBlock(32, 16, 1); }, {"BasicBlock(32 -> 16", "needs out >= in"});
  expect_error([] { PreActBlock(16, 32, 1, false); },
               {"PreActBlock(16 -> 32", "identity shortcut needs in == out"});
}

// Each block's forward against its definition, composed here from its own sub-layers and plain
// ops (the blocks fuse the ReLU and the shortcut's add into batch norm's output pass):
//   basic:   relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), shortcut = x or option A;
//   pre-act: a = relu(bn1(x)); conv2(relu(bn2(conv1(a)))) + (projection(a) or x).
TEST(ResidualBlocks, ForwardsFollowTheirDefinitions) {
  std::mt19937_64 rng(fresh_seed());
  const Tensor x = random_tensor({2, 16, 8, 8}, rng, -1, 1, DType::F32);
  auto expect_same = [](const Tensor& got, const Tensor& want, const char* what) {
    ASSERT_EQ(got.shape(), want.shape()) << what;
    expect_close_l2(want, got, 1e-6, what);
  };
  for (auto [in, out, stride] : {std::tuple{16, 16, 1}, std::tuple{16, 32, 2}}) {
    BasicBlock b(in, out, stride);
    b.reset_parameters(rng());
    auto part = [&b](const char* name, const Tensor& t) { return forward_child(b, name, t); };
    const Tensor got = b.forward(x);
    const Tensor h = relu(part("bn1", part("conv1", x)));
    const Tensor skip = out == in && stride == 1 ? x : pad_channels_subsample(x, out, stride);
    expect_same(got, relu(add(part("bn2", part("conv2", h)), skip)),
                out == in ? "basic block, identity" : "basic block, option A");
  }
  for (bool projection : {false, true}) {
    PreActBlock b(16, projection ? 32 : 16, projection ? 2 : 1, projection);
    b.reset_parameters(rng());
    auto part = [&b](const char* name, const Tensor& t) { return forward_child(b, name, t); };
    const Tensor got = b.forward(x);
    const Tensor a = relu(part("bn1", x));
    const Tensor h = relu(part("bn2", part("conv1", a)));
    const Tensor skip = projection ? part("shortcut", a) : x;
    expect_same(got, add(part("conv2", h), skip),
                projection ? "pre-activation block, projection" : "pre-activation block, identity");
  }
}

// ---- the zoo -------------------------------------------------------------------------------

// He et al. 2016, CIFAR-10 ResNets with option-A shortcuts, 3-channel input: a 3x3 stem
// (3*16*9 + BN 32), stage 1 n blocks of 2 16->16 convs (2*2304 + BN 64), stage 2 one block
// 16->32 (4608 + 9216 + 128) and n-1 of 32->32 (18432 + 128), stage 3 one 32->64 (18432 + 36864
// + 256) and n-1 of 64->64 (73728 + 256), and the classifier 64*10 + 10.
int64_t he_cifar_resnet_params(int64_t n) {
  return 464 + n * 4672 + 13952 + (n - 1) * 18560 + 55552 + (n - 1) * 73984 + 650;
}

TEST(Zoo, CifarResNetParameterCountsMatchHeEtAl) {
  const nlohmann::json rgb = {{"input_shape", {3, 32, 32}}};
  EXPECT_EQ(he_cifar_resnet_params(5), 464154);  // the paper's "0.46 M"
  EXPECT_EQ(zoo("resnet20", rgb)->num_parameters(), he_cifar_resnet_params(3));  // 0.27 M
  EXPECT_EQ(zoo("resnet32", rgb)->num_parameters(), 464154);
  EXPECT_EQ(zoo("resnet56", rgb)->num_parameters(), he_cifar_resnet_params(9));  // 0.85 M
  // The default input is one channel (Fashion-MNIST at 32x32): the stem loses 2*16*9 weights.
  EXPECT_EQ(zoo("resnet32")->num_parameters(), 464154 - 288);
}

TEST(Zoo, Resnet32TargetsThirtyConvolutionsNotTheStemOrClassifier) {
  auto model = zoo("resnet32");
  std::vector<Conv2d*> convs;
  collect_convs(*model, convs);
  ASSERT_EQ(convs.size(), 31u);  // 1 stem + 3 stages * 5 blocks * 2
  EXPECT_FALSE(convs.front()->targetable());
  int targetable = 0;
  for (Conv2d* c : convs) targetable += c->targetable();
  EXPECT_EQ(targetable, 30);
  std::vector<Linear*> linears;
  collect_linears(*model, linears);
  ASSERT_EQ(linears.size(), 1u);
  EXPECT_FALSE(linears[0]->targetable());
}

TEST(Zoo, EveryConvNetMarksStemAndClassifierOnly) {
  struct Want {
    const char* name;
    size_t convs, linears;
  };
  for (const Want& w : {Want{"lenet5", 2, 3}, Want{"resnet20", 19, 1}, Want{"resnet56", 55, 1},
                        Want{"resnet32-wide", 34, 1}, Want{"vgg16", 13, 2}}) {
    SCOPED_TRACE(w.name);
    auto model = zoo(w.name);
    std::vector<Conv2d*> convs;
    std::vector<Linear*> linears;
    collect_convs(*model, convs);
    collect_linears(*model, linears);
    ASSERT_EQ(convs.size(), w.convs);
    ASSERT_EQ(linears.size(), w.linears);
    for (size_t i = 0; i < convs.size(); ++i) EXPECT_EQ(convs[i]->targetable(), i != 0) << i;
    for (size_t i = 0; i < linears.size(); ++i)
      EXPECT_EQ(linears[i]->targetable(), i + 1 != linears.size()) << i;
  }
}

// A model's layers in order, nested Sequentials flattened: residual blocks by their whole
// description (channels, stride, shortcut), other layers by kind; joined by " | ".
void list_layers(Module& m, std::string& out) {
  for (auto& [name, layer] : m.children()) {
    if (dynamic_cast<Sequential*>(layer.get()) != nullptr) {
      list_layers(*layer, out);
      continue;
    }
    const std::string d = layer->describe();
    const bool block = d.rfind("BasicBlock", 0) == 0 || d.rfind("PreActBlock", 0) == 0;
    if (!out.empty()) out += " | ";
    out += block ? d : d.substr(0, d.find_first_of("( "));
  }
}

// The zoo's models hold their layers in their papers' order: a ReLU or pooling missing or
// moved, or a stage's stride on the wrong block, would still train and pass every shape and
// gradient check.
TEST(Zoo, ModelsHoldTheirLayersInOrder) {
  auto layers = [](const std::string& name) {
    nlohmann::json cfg = nlohmann::json::object();
    std::string out;
    list_layers(*build_model(name, cfg), out);
    return out;
  };
  EXPECT_EQ(layers("mlp"), "Flatten | Linear | ReLU | Linear | ReLU | Linear");
  EXPECT_EQ(layers("lenet5"),
            "Conv2d | ReLU | MaxPool2d | Conv2d | ReLU | MaxPool2d | Flatten | Linear | ReLU | "
            "Linear | ReLU | Linear");
  std::string vgg;
  for (int v : {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0})
    vgg += v == 0 ? "MaxPool2d | " : "Conv2d | BatchNorm2d | ReLU | ";
  EXPECT_EQ(layers("vgg16"), vgg + "Flatten | Linear | ReLU | Linear");
  // The Transformer: the patch stem, the blocks, a final LayerNorm, the mean token, the classifier.
  EXPECT_EQ(layers("transformer"), "PatchEmbedding | TransformerBlock | TransformerBlock | "
                                   "TransformerBlock | TransformerBlock | LayerNorm | "
                                   "MeanOverTokens | Linear");
  // He et al.'s CIFAR ResNets: each stage after the first starts with a stride-2 block.
  auto stages = [](const char* kind, const int (&widths)[3], int first_in, int blocks,
                   const char* first_shortcut) {
    std::string out;
    int in = first_in;
    for (int s = 0; s < 3; ++s)
      for (int b = 0; b < blocks; ++b) {
        const int w = widths[s];
        const bool first = b == 0 && (s > 0 || in != w);
        out += std::string(kind) + "(" + std::to_string(in) + " -> " + std::to_string(w) +
               (b == 0 && s > 0 ? ", stride 2" : "") +
               (first ? std::string(", ") + first_shortcut : ", identity") + ") | ";
        in = w;
      }
    return out;
  };
  for (auto [name, blocks] : {std::pair{"resnet20", 3}, std::pair{"resnet32", 5}})
    EXPECT_EQ(layers(name), "Conv2d | BatchNorm2d | ReLU | " +
                                stages("BasicBlock", {16, 32, 64}, 16, blocks,
                                       "option-A shortcut") +
                                "GlobalAvgPool | Linear")
        << name;
  EXPECT_EQ(layers("resnet32-wide"),
            "Conv2d | " + stages("PreActBlock", {32, 64, 128}, 16, 5, "1x1 projection") +
                "BatchNorm2d | ReLU | GlobalAvgPool | Linear");
}

TEST(Zoo, OutputShapesAndConfigDefaults) {
  NoGradGuard ng;
  struct Case {
    const char* name;
    Shape input;
  };
  for (const Case& c : {Case{"lenet5", {1, 28, 28}}, Case{"lenet5", {3, 32, 32}},
                        Case{"resnet20", {1, 32, 32}}, Case{"resnet32-wide", {3, 32, 32}},
                        Case{"vgg16", {1, 32, 32}}}) {
    SCOPED_TRACE(std::string(c.name) + " " + shape_str(c.input));
    nlohmann::json cfg = {{"input_shape", c.input}, {"num_classes", 7}};
    auto model = build_model(c.name, cfg);
    model->reset_parameters(5);
    model->eval();
    Shape in{2};
    in.insert(in.end(), c.input.begin(), c.input.end());
    EXPECT_EQ(model->forward(Tensor::zeros(in)).shape(), (Shape{2, 7}));
  }
  nlohmann::json cfg = nlohmann::json::object();
  build_model("lenet5", cfg);
  EXPECT_EQ(cfg["input_shape"], nlohmann::json({1, 28, 28}));
  cfg = nlohmann::json::object();
  build_model("resnet32", cfg);
  EXPECT_EQ(cfg["input_shape"], nlohmann::json({1, 32, 32}));
  EXPECT_EQ(cfg["num_classes"], 10);
  cfg = {{"input_shape", {1, 28, 28}}};
  expect_error([&] { build_model("vgg16", cfg); },
               {"vgg16", "[1, 28, 28]", "too small for five 2x2 poolings"});
  // resnet32-wide: the reference code's BatchNorm (eps 1e-3, momentum 0.003) in its config and
  // its layers, and a 7x7 stem padded to keep 32x32.
  cfg = nlohmann::json::object();
  auto wide = build_model("resnet32-wide", cfg);
  EXPECT_EQ(cfg["bn_eps"], 1e-3);
  EXPECT_EQ(cfg["bn_momentum"], 0.003);
  const auto& stages = wide->children();
  ASSERT_GE(stages.size(), 5u);
  EXPECT_EQ(stages[0].second->describe(), "Conv2d(1 -> 16, 7x7, pad 3, no bias)");
  EXPECT_EQ(stages[4].second->describe(), "BatchNorm2d(128, eps 0.001, momentum 0.003)");
  for (const char* model : {"resnet20", "lenet5", "vgg16"}) {
    cfg = {{"num_classes", 0}};
    expect_error([&] { build_model(model, cfg); }, {model, "num_classes must be positive"});
    cfg = {{"input_shape", {1, 0, 32}}};
    expect_error([&] { build_model(model, cfg); }, {model, "[1, 0, 32]"});
  }
  cfg = {{"input_shape", {1, 32, 28}}};
  expect_error([&] { build_model("vgg16", cfg); }, {"vgg16", "[1, 32, 28]", "too small"});
}

// Weights that feed a ReLU start He-uniform, U(+-sqrt(6 / fan_in)), the classifiers (and the
// attention projections) PyTorch's default U(+-1 / sqrt(fan_in)): the largest |w| * sqrt(fan_in)
// of each weight tells them apart (at least 144 draws: near sqrt(6) = 2.45 for He, at most 1 for
// the default).
TEST(Zoo, LayersBeforeAReluStartHeUniform) {
  struct Want {
    const char* model;
    std::vector<std::string> he, torch_default;
  };
  for (const Want& w :
       {Want{"lenet5", {"0.weight", "3.weight", "7.weight", "9.weight"}, {"11.weight"}},
        Want{"resnet20", {"0.weight", "3.0.conv1.weight", "5.2.conv2.weight"}, {"7.weight"}},
        Want{"transformer", {"1.fc1.weight", "4.fc1.weight"},
             {"1.attention.q.weight", "1.fc2.weight", "7.weight"}}}) {
    auto model = zoo(w.model);
    std::map<std::string, Tensor> params;
    for (auto& [name, t] : model->named_parameters()) params[name] = t;
    auto spread = [&](const std::string& name) {
      const Tensor& t = params.at(name);
      const std::vector<float> v = t.to_vector<float>();
      float top = 0;
      for (float x : v) top = std::max(top, std::fabs(x));
      return top * std::sqrt(static_cast<float>(t.numel() / t.shape()[0]));
    };
    for (const std::string& name : w.he) {
      EXPECT_GT(spread(name), 2.0f) << w.model << " " << name;
      EXPECT_LE(spread(name), std::sqrt(6.0f) * 1.0001f) << w.model << " " << name;
    }
    for (const std::string& name : w.torch_default)
      EXPECT_LE(spread(name), 1.0001f) << w.model << " " << name;
  }
}

// A few SGD steps on one small random batch: the loss must fall (the net memorises it).
void expect_loss_falls(const std::string& name, int64_t batch, int steps, float lr) {
  SCOPED_TRACE(name);
  auto model = zoo(name);
  model->train();
  std::mt19937_64 rng(fresh_seed());
  const Tensor x = random_tensor({batch, 1, 32, 32}, rng, -1, 1, DType::F32);
  std::vector<int64_t> labels(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; ++i) labels[i] = i % 10;
  const Tensor y = Tensor::from_vector(labels, {batch});
  SGD opt(model->parameters(), lr, 0.9f);
  std::vector<double> losses;
  const int64_t nodes = live_autograd_nodes();
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    Tensor loss = cross_entropy(model->forward(x), y);
    losses.push_back(loss.item());
    ASSERT_TRUE(std::isfinite(losses.back())) << "step " << s;
    loss.backward();
    for (const Tensor& p : model->parameters()) ASSERT_TRUE(p.grad().defined());
    opt.step();
  }
  EXPECT_LT(losses.back(), 0.7 * losses.front()) << "losses " << ::testing::PrintToString(losses);
  EXPECT_EQ(live_autograd_nodes(), nodes) << "training steps leak their graphs";
}

TEST(ZooTraining, Resnet20LossFalls) { expect_loss_falls("resnet20", 8, 6, 0.05f); }
TEST(ZooTraining, Vgg16LossFalls) { expect_loss_falls("vgg16", 4, 6, 0.02f); }

}  // namespace
}  // namespace tdrop::testing
