// The CIFAR ResNets.
//
// resnet20/32/56 (He et al. 2016, "Deep Residual Learning", section 4.2): a 3x3 stem with 16
// channels, three stages of n = 3/5/9 basic blocks with widths 16/32/64 (the first block of the
// second and third stage halves the resolution; option-A shortcuts, so the count stays that of
// the paper: 0.27 M / 0.46 M / 0.85 M parameters for 3-channel input), global average pooling and
// one fully connected layer: 6n + 2 layers.
//
// resnet32-wide is the ResNet-32 of the targeted-dropout reference code (its cifar10_resnet32):
// a 7x7 stem with 16 channels, stages of 5 pre-activation blocks with widths 32/64/128 whose
// first block has a 1x1 projection shortcut, a final BatchNorm + ReLU, global average pooling
// and the classifier; BatchNorm as in that code (eps 1e-3, decay 0.997 = momentum 0.003).
#include "layers/activation.h"
#include "layers/batch_norm.h"
#include "layers/conv2d.h"
#include "layers/linear.h"
#include "layers/pool.h"
#include "layers/residual.h"
#include "layers/sequential.h"
#include "models/registry.h"

namespace tdrop {
namespace {

// Reads and completes input_shape and num_classes (defaults: [1, 32, 32], Fashion-MNIST padded
// to 32x32; 10 classes).
std::pair<std::vector<int64_t>, int64_t> image_config(nlohmann::json& cfg, const char* model) {
  const std::vector<int64_t> in = cfg.value("input_shape", std::vector<int64_t>{1, 32, 32});
  const int64_t classes = cfg.value("num_classes", int64_t{10});
  TDROP_CHECK(in.size() == 3 && in[0] > 0 && in[1] > 0 && in[2] > 0, model,
              ": input_shape must be [C, H, W], got ", shape_str(in));
  TDROP_CHECK(classes > 0, model, ": num_classes must be positive, got ", classes);
  cfg["input_shape"] = in;
  cfg["num_classes"] = classes;
  return {in, classes};
}

std::shared_ptr<Module> build_cifar_resnet(nlohmann::json& cfg, const char* model,
                                           int64_t blocks) {
  const auto [in, classes] = image_config(cfg, model);
  const InitScheme init = InitScheme::KaimingUniform;
  auto net = std::make_shared<Sequential>();
  net->add(std::make_shared<Conv2d>(
      in[0], 16, 3,
      Conv2dOptions{.padding = 1, .bias = false, .init = init, .targetable = false}));  // stem
  net->add(std::make_shared<BatchNorm2d>(16));
  net->add(std::make_shared<ReLU>());
  int64_t width = 16;
  for (int64_t stage = 0; stage < 3; ++stage) {
    const int64_t out = 16 << stage;
    auto seq = std::make_shared<Sequential>();
    for (int64_t b = 0; b < blocks; ++b) {
      seq->add(std::make_shared<BasicBlock>(width, out, stage > 0 && b == 0 ? 2 : 1, init));
      width = out;
    }
    net->add(seq);
  }
  net->add(std::make_shared<GlobalAvgPool>());
  net->add(std::make_shared<Linear>(width, classes))->set_targetable(false);  // classifier
  return net;
}

std::shared_ptr<Module> build_resnet32_wide(nlohmann::json& cfg) {
  const auto [in, classes] = image_config(cfg, "resnet32-wide");
  const double eps = cfg.value("bn_eps", 1e-3), momentum = cfg.value("bn_momentum", 0.003);
  cfg["bn_eps"] = eps;
  cfg["bn_momentum"] = momentum;
  const InitScheme init = InitScheme::KaimingUniform;
  auto net = std::make_shared<Sequential>();
  net->add(std::make_shared<Conv2d>(
      in[0], 16, 7,
      Conv2dOptions{.padding = 3, .bias = false, .init = init, .targetable = false}));  // stem
  int64_t width = 16;
  const int64_t widths[3] = {32, 64, 128};
  for (int64_t stage = 0; stage < 3; ++stage) {
    auto seq = std::make_shared<Sequential>();
    for (int64_t b = 0; b < 5; ++b) {
      const bool first = b == 0;
      seq->add(std::make_shared<PreActBlock>(width, widths[stage], first && stage > 0 ? 2 : 1,
                                             first, init, eps, momentum));
      width = widths[stage];
    }
    net->add(seq);
  }
  net->add(std::make_shared<BatchNorm2d>(width, eps, momentum));
  net->add(std::make_shared<ReLU>());
  net->add(std::make_shared<GlobalAvgPool>());
  net->add(std::make_shared<Linear>(width, classes))->set_targetable(false);  // classifier
  return net;
}

const bool registered_20 = register_model(
    {"resnet20", "ResNet-20 (He et al. 2016, CIFAR): 3 stages x 3 basic blocks, 16/32/64",
     [](nlohmann::json& cfg) { return build_cifar_resnet(cfg, "resnet20", 3); }, 32});
const bool registered_32 = register_model(
    {"resnet32", "ResNet-32 (He et al. 2016, CIFAR): 3 stages x 5 basic blocks, 16/32/64",
     [](nlohmann::json& cfg) { return build_cifar_resnet(cfg, "resnet32", 5); }, 32});
const bool registered_56 = register_model(
    {"resnet56", "ResNet-56 (He et al. 2016, CIFAR): 3 stages x 9 basic blocks, 16/32/64",
     [](nlohmann::json& cfg) { return build_cifar_resnet(cfg, "resnet56", 9); }, 32});
const bool registered_wide = register_model(
    {"resnet32-wide",
     "ResNet-32 of the targeted-dropout reference: 7x7 stem, pre-activation blocks 32/64/128",
     build_resnet32_wide, 32});

}  // namespace
}  // namespace tdrop
