// Targeted dropout as a layer setting. A layer that owns a weight W [out, ...] (Linear, Conv2d)
// holds a TargetedWeight and asks it for the weight to use in each forward pass:
//   training: W' = W with each targeted entry (weight mode) or row (unit mode) dropped with
//             probability alpha(t), drawn from Philox keyed by (seed, step, layer, index);
//   eval:     W with its targeted set removed (default), or W unchanged (keep_all_in_eval).
// The gradient reaching W is dW' * mask. Exact semantics: kernels/targeted_dropout.h.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace tdrop {

struct TargetedDropoutConfig {
  enum class Mode { None, Weight, Unit };
  Mode mode = Mode::None;
  // Targeted fraction of each row (weight) or of the rows (unit). A double, so k = floor(gamma n)
  // is the decimal's (td_count): 0.9f is 0.89999997, whose floor(gamma n) is one short for n = 300.
  double gamma = 0.0;
  float alpha = 0.0f;  // drop probability of a targeted entry / row
  bool ramp = false;   // ramp gamma and alpha up over ramp_steps (DESIGN.md, "Ramping")
  int64_t ramp_steps = 0;
  bool unit_per_weight_draws = false;  // unit mode: one draw per weight, as the reference code
  bool keep_all_in_eval = false;       // eval: use all weights instead of removing the targeted set
  // Untargeted dropout baselines (gamma = 1): kept weights scaled by 1/(1 - alpha) in training.
  bool rescale = false;

  bool enabled() const { return mode != Mode::None; }
  // Throws naming `where` when gamma/alpha are outside [0, 1] or the ramp is ill-formed.
  void validate(const std::string& where) const;
  // gamma(t) and alpha(t) at training step t (the constants when not ramping).
  double gamma_at(int64_t step) const;
  float alpha_at(int64_t step) const;
  std::string describe() const;  // "td weight g=0.75 a=0.66" or "" when off
};

TargetedDropoutConfig::Mode parse_td_mode(const std::string& s);
const char* td_mode_name(TargetedDropoutConfig::Mode m);

// Which CUDA implementation layers use (benchmarks and tests switch it; fused is the default).
enum class TdCudaImpl { Fused, Unfused };
void set_td_cuda_impl(TdCudaImpl impl);
TdCudaImpl td_cuda_impl();

class TargetedWeight {
 public:
  // `layer_index` numbers the targeted layers of a model (it keys the Philox stream).
  void configure(const TargetedDropoutConfig& cfg, const std::string& layer_name,
                 uint64_t layer_index);
  const TargetedDropoutConfig& config() const { return cfg_; }
  bool enabled() const { return cfg_.enabled(); }
  const std::string& layer_name() const { return name_; }

  uint64_t layer_index() const { return index_; }

  // The weight to use in this forward pass (see the header comment); differentiable.
  Tensor effective(const Tensor& weight, bool training, uint64_t seed, uint64_t step);
  // The rows x n task this layer runs for `weight` at `step` (pointers left null).
  struct Plan {
    int64_t rows, n, k;
    float alpha;
    bool active;  // false: W' = W (nothing targeted in this mode)
  };
  Plan plan(const Tensor& weight, bool training, uint64_t step) const;

  // A whole-model grouped launch may compute this step's W' and mask ahead of the forward pass;
  // effective() then uses them instead of launching its own kernel.
  void set_precomputed(const Tensor& w_prime, const Tensor& mask, uint64_t step);
  // While set, effective() in eval mode returns `w_eval` for `weight` without computing it
  // (EvalWeightCache); an undefined w_eval clears it.
  void set_eval_weight(const Tensor& weight, const Tensor& w_eval);

 private:
  TargetedDropoutConfig cfg_;
  std::string name_;
  uint64_t index_ = 0;
  Tensor pre_w_, pre_mask_;
  uint64_t pre_step_ = ~uint64_t{0};
  Tensor eval_src_, eval_w_;
};

// A layer with a prunable weight (Linear, Conv2d). Models mark their stem and classifier
// non-targetable; configure_targeted_dropout then sets every targetable layer.
class TargetableLayer {
 public:
  virtual ~TargetableLayer() = default;
  virtual Tensor& weight() = 0;
  TargetedWeight& targeted() { return td_; }
  bool targetable() const { return targetable_; }
  void set_targetable(bool on) { targetable_ = on; }

 protected:
  TargetedWeight td_;
  bool targetable_ = true;
};

class Module;
// Targetable layers of a model in forward order, with their parameter-path names.
std::vector<std::pair<std::string, TargetableLayer*>> targetable_layers(Module& model);
void configure_targeted_dropout(Module& model, const TargetedDropoutConfig& cfg);

struct SparsityReport {
  int64_t targeted_total = 0, targeted_zero = 0;  // weights of targetable layers
  int64_t all_total = 0, all_zero = 0;            // every weight (parameters of 2+ dims)
  double targeted() const { return targeted_total ? double(targeted_zero) / targeted_total : 0; }
  double all() const { return all_total ? double(all_zero) / all_total : 0; }
};
// Evaluation's W' depends on the weights alone (the targeted set removed, nothing drawn), and
// they do not change while a model is evaluated: this computes each targeted layer's once and
// hands it to every forward pass until it goes out of scope. Without it a CUDA evaluation would
// launch, and wait for, one selection per layer and batch.
class EvalWeightCache {
 public:
  explicit EvalWeightCache(Module& model);
  ~EvalWeightCache();
  EvalWeightCache(const EvalWeightCache&) = delete;
  EvalWeightCache& operator=(const EvalWeightCache&) = delete;

 private:
  void clear();
  std::vector<TargetedWeight*> layers_;
};

// Share of exactly-zero values in the stored weights.
SparsityReport measure_sparsity(Module& model);

// On CUDA, computes this step's W' and masks of every targeted layer in one grouped launch and
// hands them to the layers, so their forward passes launch nothing. No-op on CPU. The check for
// NaN/Inf weights of a step runs during the next call (no stall of the GPU per step);
// finish_targeted_dropout_checks() runs the last one now. Both throw naming the layer.
void precompute_targeted_dropout(Module& model, uint64_t seed, uint64_t step);
void finish_targeted_dropout_checks();

}  // namespace tdrop
