// transformer: a Vision Transformer encoder (Dosovitskiy et al. 2021) small enough for
// Fashion-MNIST. The image is cut into patch x patch squares, each embedded by one strided
// convolution (the stem, not targeted), a learned position embedding is added, `depth` pre-norm
// Transformer blocks follow, and the mean token after a final LayerNorm goes to the classifier
// (not targeted). Targeted dropout applies to the 6 Linear layers of every block: query, key,
// value, attention output and the two feed-forward layers.
#include "core/philox.h"
#include "kernels/ops.h"
#include "layers/conv2d.h"
#include "layers/init.h"
#include "layers/linear.h"
#include "layers/transformer.h"
#include "models/registry.h"

namespace tdrop {
namespace {

class VisionTransformer : public Module {
 public:
  VisionTransformer(int64_t channels, int64_t tokens, int64_t patch, int64_t width,
                    int64_t depth, int64_t heads, int64_t mlp_width, int64_t classes)
      : tokens_(tokens), width_(width) {
    patch_ = register_module(
        "patch", std::make_shared<Conv2d>(channels, width, patch,
                                          Conv2dOptions{.stride = patch, .targetable = false}));
    position_ = register_parameter("position", Tensor::zeros({1, tokens, width}));
    for (int64_t i = 0; i < depth; ++i)
      blocks_.push_back(register_module(
          "block" + std::to_string(i), std::make_shared<TransformerBlock>(width, heads, mlp_width)));
    norm_ = register_module("norm", std::make_shared<LayerNorm>(width));
    head_ = register_module("head", std::make_shared<Linear>(width, classes));
    head_->set_targetable(false);
  }

  Tensor forward(const Tensor& x) override {
    const Tensor p = patch_->forward(x);  // [b, width, rows, cols] of patches
    TDROP_CHECK(p.size(2) * p.size(3) == tokens_, "transformer: input ", x.describe(), " gives ",
                p.size(2) * p.size(3), " patches, the model was built for ", tokens_);
    const int64_t b = x.size(0);
    Tensor h = add(transpose(reshape(p, {b, width_, tokens_}), 1, 2), position_);
    for (const auto& block : blocks_) h = block->forward(h);
    return head_->forward(mean(norm_->forward(h), {1}));
  }
  std::string type_name() const override { return "VisionTransformer"; }

 protected:
  // Position embeddings start small (ViT uses a truncated normal of std 0.02).
  void init_own_parameters(uint64_t seed, uint64_t& next_stream) override {
    fill_uniform(position_, 0.02f, seed, kStreamInit + next_stream++);
  }

 private:
  int64_t tokens_, width_;
  std::shared_ptr<Conv2d> patch_;
  Tensor position_;
  std::vector<std::shared_ptr<TransformerBlock>> blocks_;
  std::shared_ptr<LayerNorm> norm_;
  std::shared_ptr<Linear> head_;
};

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
  const int64_t tokens = (in[1] / patch) * (in[2] / patch);
  return std::make_shared<VisionTransformer>(in[0], tokens, patch, width, depth, heads, mlp,
                                             classes);
}

const bool registered = register_model(
    {"transformer",
     "Vision Transformer: 4x4 patches, 4 pre-norm blocks of width 64, 4 heads, mlp 128",
     build_transformer, 0});

}  // namespace
}  // namespace tdrop
