#include "layers/transformer.h"

#include <cmath>
#include <string>

#include "core/philox.h"
#include "kernels/ops.h"
#include "layers/init.h"

namespace tdrop {
namespace {

void check_sequence(const char* who, const Tensor& x, int64_t width) {
  TDROP_CHECK(x.dim() == 3 && x.size(2) == width, who, "(", width, "): input ", x.describe(),
              " is not [batch, tokens, ", width, "]");
}

}  // namespace

LayerNorm::LayerNorm(int64_t width, double eps) : width_(width), eps_(eps) {
  TDROP_CHECK(width > 0, "LayerNorm: width must be positive, got ", width);
  TDROP_CHECK(eps > 0, "LayerNorm(", width, "): eps must be positive, got ", eps);
  gamma_ = register_parameter("weight", Tensor::full({width}, 1.0));
  beta_ = register_parameter("bias", Tensor::zeros({width}));
}

void LayerNorm::init_own_parameters(uint64_t, uint64_t&) {
  gamma_.copy_(Tensor::full({width_}, 1.0));
  beta_.copy_(Tensor::zeros({width_}));
}

Tensor LayerNorm::forward(const Tensor& x) {
  TDROP_CHECK(x.dim() >= 1 && x.shape().back() == width_, "LayerNorm(", width_, "): input ",
              x.describe(), " does not end in ", width_);
  return layer_norm(x, gamma_, beta_, eps_);
}

std::string LayerNorm::describe() const { return "LayerNorm(" + std::to_string(width_) + ")"; }

MultiHeadSelfAttention::MultiHeadSelfAttention(int64_t width, int64_t heads)
    : width_(width), heads_(heads) {
  TDROP_CHECK(width > 0 && heads > 0 && width % heads == 0, "MultiHeadSelfAttention: width ",
              width, " must be a positive multiple of heads ", heads);
  q_ = register_module("q", std::make_shared<Linear>(width, width));
  k_ = register_module("k", std::make_shared<Linear>(width, width));
  v_ = register_module("v", std::make_shared<Linear>(width, width));
  out_ = register_module("out", std::make_shared<Linear>(width, width));
}

Tensor MultiHeadSelfAttention::forward(const Tensor& x) {
  check_sequence("MultiHeadSelfAttention", x, width_);
  const int64_t b = x.size(0), t = x.size(1), dh = width_ / heads_;
  const Tensor flat = reshape(x, {b * t, width_});
  // [b * t, width] -> [b * heads, t, dh]: each head's tokens contiguous for the batched GEMMs.
  auto split = [&](const Tensor& y) {
    return reshape(transpose(reshape(y, {b, t, heads_, dh}), 1, 2), {b * heads_, t, dh});
  };
  const Tensor q = split((*q_)(flat)), k = split((*k_)(flat));
  const Tensor v = split((*v_)(flat));
  const Tensor weights =
      softmax(mul_scalar(bmm(q, k, /*trans_b=*/true), 1.0 / std::sqrt(static_cast<double>(dh))));
  const Tensor mixed = bmm(weights, v);  // [b * heads, t, dh]
  const Tensor merged =
      reshape(transpose(reshape(mixed, {b, heads_, t, dh}), 1, 2), {b * t, width_});
  return reshape((*out_)(merged), {b, t, width_});
}

std::string MultiHeadSelfAttention::describe() const {
  return "MultiHeadSelfAttention(" + std::to_string(width_) + ", " + std::to_string(heads_) +
         " heads)";
}

TransformerBlock::TransformerBlock(int64_t width, int64_t heads, int64_t mlp_width)
    : width_(width), heads_(heads), mlp_width_(mlp_width) {
  TDROP_CHECK(mlp_width > 0, "TransformerBlock: mlp width must be positive, got ", mlp_width);
  norm1_ = register_module("norm1", std::make_shared<LayerNorm>(width));
  attention_ = register_module("attention", std::make_shared<MultiHeadSelfAttention>(width, heads));
  norm2_ = register_module("norm2", std::make_shared<LayerNorm>(width));
  fc1_ = register_module("fc1", std::make_shared<Linear>(width, mlp_width, true,
                                                         InitScheme::KaimingUniform));
  fc2_ = register_module("fc2", std::make_shared<Linear>(mlp_width, width));
}

Tensor TransformerBlock::forward(const Tensor& x) {
  check_sequence("TransformerBlock", x, width_);
  const int64_t b = x.size(0), t = x.size(1);
  const Tensor h = add(x, (*attention_)((*norm1_)(x)));
  const Tensor flat = reshape((*norm2_)(h), {b * t, width_});
  const Tensor mlp = (*fc2_)(relu((*fc1_)(flat)));
  return add(h, reshape(mlp, {b, t, width_}));
}

std::string TransformerBlock::describe() const {
  return "TransformerBlock(" + std::to_string(width_) + ", " + std::to_string(heads_) +
         " heads, mlp " + std::to_string(mlp_width_) + ")";
}

PatchEmbedding::PatchEmbedding(int64_t channels, int64_t width, int64_t patch, int64_t height,
                               int64_t width_px)
    : channels_(channels), width_(width), patch_(patch), height_(height), width_px_(width_px),
      tokens_(patch > 0 ? (height / patch) * (width_px / patch) : 0) {
  TDROP_CHECK(channels > 0 && width > 0 && patch > 0 && height > 0 && width_px > 0 &&
                  height % patch == 0 && width_px % patch == 0,
              "PatchEmbedding: channels ", channels, ", width ", width, " and ", patch, "x", patch,
              " patches must be positive and tile the ", height, "x", width_px, " images");
  position_ = register_parameter("position", Tensor::zeros({1, tokens_, width}));
  conv_ = register_module("patch", std::make_shared<Conv2d>(
                                       channels, width, patch,
                                       Conv2dOptions{.stride = patch, .targetable = false}));
}

void PatchEmbedding::init_own_parameters(uint64_t seed, uint64_t& next_stream) {
  fill_uniform(position_, 0.02f, seed, kStreamInit + next_stream++);
}

Tensor PatchEmbedding::forward(const Tensor& x) {
  // Exactly the images the model was built for: any other size would be cut into patches that
  // drop its last pixels, or laid out in a grid the position embedding does not describe.
  TDROP_CHECK(x.dim() == 4 && x.size(1) == channels_ && x.size(2) == height_ &&
                  x.size(3) == width_px_,
              "PatchEmbedding: input ", x.describe(), " is not [batch, ", channels_, ", ",
              height_, ", ", width_px_, "], the images the model was built for");
  const Tensor p = (*conv_)(x);  // [batch, width, rows, cols] of patches
  return add(transpose(reshape(p, {x.size(0), width_, tokens_}), 1, 2), position_);
}

std::string PatchEmbedding::describe() const {
  return "PatchEmbedding(" + std::to_string(channels_) + " -> " + std::to_string(width_) + ", " +
         std::to_string(patch_) + "x" + std::to_string(patch_) + " patches, " +
         std::to_string(tokens_) + " tokens)";
}

Tensor MeanOverTokens::forward(const Tensor& x) {
  TDROP_CHECK(x.dim() == 3, "MeanOverTokens: input ", x.describe(),
              " is not [batch, tokens, width]");
  return mean(x, {1});
}

}  // namespace tdrop
