// mlp: LeNet-300-100 (LeCun et al. 1998), 784-300-100-10 with ReLU: the classic network of the
// pruning literature, and the one targeted dropout is first shown on.
#include "layers/activation.h"
#include "layers/linear.h"
#include "layers/sequential.h"
#include "models/registry.h"

namespace tdrop {
namespace {

std::shared_ptr<Module> build_mlp(nlohmann::json& cfg) {
  const int64_t in = cfg.value("input_features", int64_t{784});
  const int64_t classes = cfg.value("num_classes", int64_t{10});
  const std::vector<int64_t> hidden = cfg.value("hidden", std::vector<int64_t>{300, 100});
  cfg["input_features"] = in;
  cfg["num_classes"] = classes;
  cfg["hidden"] = hidden;
  auto net = std::make_shared<Sequential>();
  net->add(std::make_shared<Flatten>());
  int64_t width = in;
  for (int64_t h : hidden) {
    net->add(std::make_shared<Linear>(width, h));
    net->add(std::make_shared<ReLU>());
    width = h;
  }
  // The classifier is not targeted (as in the reference code); the hidden layers are, the
  // input layer included: an MLP has no convolutional stem to spare.
  net->add(std::make_shared<Linear>(width, classes))->set_targetable(false);
  return net;
}

const bool registered = register_model(
    {"mlp", "LeNet-300-100: 784-300-100-10 fully connected, ReLU", build_mlp});

}  // namespace
}  // namespace tdrop
