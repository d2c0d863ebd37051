// lenet5: LeNet-5 (LeCun et al. 1998) with the modern substitutions of ReLU for tanh and max for
// average pooling: conv5x5(6) - pool - conv5x5(16) - pool - 120 - 84 - classes. A 28x28 input is
// padded by 2 in the first convolution so both 28x28 and 32x32 images give the classic 5x5 maps.
#include "layers/activation.h"
#include "layers/conv2d.h"
#include "layers/linear.h"
#include "layers/pool.h"
#include "layers/sequential.h"
#include "models/registry.h"

namespace tdrop {
namespace {

std::shared_ptr<Module> build_lenet5(nlohmann::json& cfg) {
  const std::vector<int64_t> in = cfg.value("input_shape", std::vector<int64_t>{1, 28, 28});
  const int64_t classes = cfg.value("num_classes", int64_t{10});
  TDROP_CHECK(in.size() == 3 && in[0] > 0, "lenet5: input_shape must be [C, H, W], got ",
              shape_str(in));
  TDROP_CHECK(classes > 0, "lenet5: num_classes must be positive, got ", classes);
  cfg["input_shape"] = in;
  cfg["num_classes"] = classes;
  const int64_t pad = (in[1] == 28 && in[2] == 28) ? 2 : 0;
  // Spatial size after conv5x5 (with pad), pool 2, conv5x5, pool 2.
  auto after = [&](int64_t s) { return ((s + 2 * pad - 4) / 2 - 4) / 2; };
  const int64_t h = after(in[1]), w = after(in[2]);
  TDROP_CHECK(in[1] + 2 * pad >= 5 && in[2] + 2 * pad >= 5 && h >= 1 && w >= 1,
              "lenet5: input ", shape_str(in), " is too small (needs at least 28x28)");

  // He initialisation for the layers followed by a ReLU.
  const InitScheme he = InitScheme::KaimingUniform;
  auto net = std::make_shared<Sequential>();
  net->add(std::make_shared<Conv2d>(
      in[0], 6, 5, Conv2dOptions{.padding = pad, .init = he, .targetable = false}));  // stem
  net->add(std::make_shared<ReLU>());
  net->add(std::make_shared<MaxPool2d>(2));
  net->add(std::make_shared<Conv2d>(6, 16, 5, Conv2dOptions{.init = he}));
  net->add(std::make_shared<ReLU>());
  net->add(std::make_shared<MaxPool2d>(2));
  net->add(std::make_shared<Flatten>());
  net->add(std::make_shared<Linear>(16 * h * w, 120, true, he));
  net->add(std::make_shared<ReLU>());
  net->add(std::make_shared<Linear>(120, 84, true, he));
  net->add(std::make_shared<ReLU>());
  net->add(std::make_shared<Linear>(84, classes))->set_targetable(false);  // classifier
  return net;
}

const bool registered = register_model(
    {"lenet5", "LeNet-5: conv5x5(6)-pool-conv5x5(16)-pool-120-84, ReLU, max pooling",
     build_lenet5});

}  // namespace
}  // namespace tdrop
