// transformer: a Vision Transformer encoder (Dosovitskiy et al. 2021) small enough for
// Fashion-MNIST. The image is cut into patch x patch squares, each embedded by one strided
// convolution (the stem, not targeted), a learned position embedding is added, `depth` pre-norm
// Transformer blocks follow, and the mean token after a final LayerNorm goes to the classifier
// (not targeted). Targeted dropout applies to the 6 Linear layers of every block: query, key,
// value, attention output and the two feed-forward layers.
#include "layers/linear.h"
#include "layers/sequential.h"
#include "layers/transformer.h"
#include "models/registry.h"

namespace tdrop {
namespace {

std::shared_ptr<Module> build_transformer(nlohmann::json& cfg) {
  const std::vector<int64_t> in = cfg.value("input_shape", std::vector<int64_t>{1, 28, 28});
  const int64_t classes = cfg.value("num_classes", int64_t{10});
  const int64_t patch = cfg.value("patch", int64_t{4}), width = cfg.value("width", int64_t{64});
  const int64_t depth = cfg.value("depth", int64_t{4}), heads = cfg.value("heads", int64_t{4});
  const int64_t mlp = cfg.value("mlp_width", 2 * width);
  TDROP_CHECK(in.size() == 3 && in[0] > 0 && in[1] > 0 && in[2] > 0,
              "transformer: input_shape must be [C, H, W], got ", shape_str(in));
  TDROP_CHECK(patch > 0 && in[1] % patch == 0 && in[2] % patch == 0, "transformer: patch ", patch,
              " does not tile the input ", shape_str(in));
  TDROP_CHECK(width > 0 && heads > 0 && width % heads == 0, "transformer: width ", width,
              " must be a positive multiple of heads ", heads);
  TDROP_CHECK(depth > 0 && mlp > 0 && classes > 0, "transformer: depth ", depth, ", mlp_width ",
              mlp, " and num_classes ", classes, " must be positive");
  cfg["input_shape"] = in;
  cfg["num_classes"] = classes;
  cfg["patch"] = patch;
  cfg["width"] = width;
  cfg["depth"] = depth;
  cfg["heads"] = heads;
  cfg["mlp_width"] = mlp;
  auto net = std::make_shared<Sequential>();
  net->add(std::make_shared<PatchEmbedding>(in[0], width, patch, in[1], in[2]));
  for (int64_t i = 0; i < depth; ++i) net->add(std::make_shared<TransformerBlock>(width, heads, mlp));
  net->add(std::make_shared<LayerNorm>(width));
  net->add(std::make_shared<MeanOverTokens>());
  net->add(std::make_shared<Linear>(width, classes))->set_targetable(false);  // classifier
  return net;
}

const bool registered = register_model(
    {"transformer",
     "Vision Transformer: 4x4 patches, 4 pre-norm blocks of width 64, 4 heads, mlp 128",
     build_transformer, 0});

}  // namespace
}  // namespace tdrop
