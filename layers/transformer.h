// The pieces of a Transformer encoder (Vaswani et al. 2017) in its pre-norm form: LayerNorm,
// multi-head self-attention and the block that joins them with a ReLU feed-forward network.
// Sequences are [batch, tokens, width]. Every projection is a Linear layer, so targeted dropout
// applies to the query, key, value, output and feed-forward weights like to any other layer.
#pragma once
#include <memory>

#include "layers/conv2d.h"
#include "layers/linear.h"
#include "layers/module.h"

namespace tdrop {

// Normalises the last axis; scale starts at 1 and shift at 0.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t width, double eps = 1e-5);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "LayerNorm"; }
  std::string describe() const override;

 protected:
  void init_own_parameters(uint64_t seed, uint64_t& next_stream) override;

 private:
  int64_t width_;
  double eps_;
  Tensor gamma_, beta_;
};

// softmax(Q K^T / sqrt(d_head)) V in `heads` heads of width/heads each, then an output
// projection. No mask: every token attends to every token (an encoder).
class MultiHeadSelfAttention : public Module {
 public:
  MultiHeadSelfAttention(int64_t width, int64_t heads);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "MultiHeadSelfAttention"; }
  std::string describe() const override;

 private:
  int64_t width_, heads_;
  std::shared_ptr<Linear> q_, k_, v_, out_;
};

// x + attention(norm1(x)), then + fc2(relu(fc1(norm2(x)))).
class TransformerBlock : public Module {
 public:
  TransformerBlock(int64_t width, int64_t heads, int64_t mlp_width);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "TransformerBlock"; }
  std::string describe() const override;

 private:
  int64_t width_, heads_, mlp_width_;
  std::shared_ptr<LayerNorm> norm1_, norm2_;
  std::shared_ptr<MultiHeadSelfAttention> attention_;
  std::shared_ptr<Linear> fc1_, fc2_;
};

// A Vision Transformer's input (Dosovitskiy et al. 2021): the image [batch, C, H, W] cut into
// patch x patch squares, each embedded by one strided convolution, plus a learned position
// embedding: [batch, tokens, width]. The convolution is the model's stem (not targetable).
class PatchEmbedding : public Module {
 public:
  // For images of channels x height x width_px, which patch must tile.
  PatchEmbedding(int64_t channels, int64_t width, int64_t patch, int64_t height, int64_t width_px);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "PatchEmbedding"; }
  std::string describe() const override;

 protected:
  // Position embeddings start small: uniform in [-0.02, 0.02] (std 0.0115; ViT draws a normal of
  // std 0.02).
  void init_own_parameters(uint64_t seed, uint64_t& next_stream) override;

 private:
  int64_t channels_, width_, patch_, height_, width_px_, tokens_;
  Tensor position_;
  std::shared_ptr<Conv2d> conv_;
};

// [batch, tokens, width] -> [batch, width]: the mean token, a classifier's input.
class MeanOverTokens : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "MeanOverTokens"; }
};

}  // namespace tdrop
