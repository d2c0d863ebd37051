// vgg16: VGG-16 (Simonyan & Zisserman 2015) with BatchNorm after each of its 13 3x3
// convolutions (64,64,M,128,128,M,256x3,M,512x3,M,512x3,M), sized for 32x32 inputs as in the
// CIFAR literature: five poolings leave a 512x1x1 map, and the classifier is 512-512-classes.
// Convolutions have no bias (the BatchNorm after each one has its own shift).
#include "layers/activation.h"
#include "layers/batch_norm.h"
#include "layers/conv2d.h"
#include "layers/linear.h"
#include "layers/pool.h"
#include "layers/sequential.h"
#include "models/registry.h"

namespace tdrop {
namespace {

std::shared_ptr<Module> build_vgg16(nlohmann::json& cfg) {
  const std::vector<int64_t> in = cfg.value("input_shape", std::vector<int64_t>{1, 32, 32});
  const int64_t classes = cfg.value("num_classes", int64_t{10});
  TDROP_CHECK(in.size() == 3 && in[0] > 0, "vgg16: input_shape must be [C, H, W], got ",
              shape_str(in));
  TDROP_CHECK(in[1] >= 32 && in[2] >= 32, "vgg16: input ", shape_str(in),
              " is too small for five 2x2 poolings (needs at least 32x32; pad Fashion-MNIST)");
  TDROP_CHECK(classes > 0, "vgg16: num_classes must be positive, got ", classes);
  cfg["input_shape"] = in;
  cfg["num_classes"] = classes;

  constexpr int64_t kPool = 0;
  const int64_t layout[] = {64,  64,  kPool, 128, 128, kPool, 256, 256, 256,  kPool,
                            512, 512, 512,   kPool, 512, 512, 512, kPool};
  auto net = std::make_shared<Sequential>();
  int64_t channels = in[0], h = in[1], w = in[2];
  bool stem = true;
  for (int64_t v : layout) {
    if (v == kPool) {
      net->add(std::make_shared<MaxPool2d>(2));
      h /= 2, w /= 2;
      continue;
    }
    net->add(std::make_shared<Conv2d>(channels, v, 3,
                                      Conv2dOptions{.padding = 1,
                                                    .bias = false,
                                                    .init = InitScheme::KaimingUniform,
                                                    .targetable = !stem}));
    net->add(std::make_shared<BatchNorm2d>(v));
    net->add(std::make_shared<ReLU>());
    channels = v;
    stem = false;
  }
  net->add(std::make_shared<Flatten>());
  net->add(std::make_shared<Linear>(channels * h * w, 512));
  net->add(std::make_shared<ReLU>());
  net->add(std::make_shared<Linear>(512, classes))->set_targetable(false);  // classifier
  return net;
}

const bool registered = register_model(
    {"vgg16", "VGG-16 with BatchNorm for 32x32 images: 13 conv layers, 512-512-classes head",
     build_vgg16, 32});

}  // namespace
}  // namespace tdrop
