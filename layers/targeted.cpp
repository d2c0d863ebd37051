#include "layers/targeted.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

#include "core/autograd.h"
#include "kernels/ops.h"
#include "kernels/targeted_dropout.h"
#include "layers/module.h"

namespace tdrop {

namespace {
TdCudaImpl g_impl = TdCudaImpl::Fused;

TdCudaWorkspace& workspace() {
  static TdCudaWorkspace* ws = new TdCudaWorkspace();  // lives until exit, like the allocator
  return *ws;
}
}  // namespace

void set_td_cuda_impl(TdCudaImpl impl) { g_impl = impl; }
TdCudaImpl td_cuda_impl() { return g_impl; }

// --- configuration --------------------------------------------------------------------------

void TargetedDropoutConfig::validate(const std::string& where) const {
  TDROP_CHECK(std::isfinite(gamma) && gamma >= 0.0 && gamma <= 1.0, where,
              ": targeted dropout gamma ", gamma, " is outside [0, 1]");
  TDROP_CHECK(std::isfinite(alpha) && alpha >= 0.0f && alpha <= 1.0f, where,
              ": targeted dropout alpha ", alpha, " is outside [0, 1]");
  TDROP_CHECK(ramp_steps >= 0, where, ": ramp steps ", ramp_steps, " is negative");
  TDROP_CHECK(!rescale || alpha < 1.0f, where, ": a rescaled dropout rate must be below 1");
}

double TargetedDropoutConfig::gamma_at(int64_t step) const {
  if (!ramp || ramp_steps <= 0) return gamma;
  // Linear to 0.95 gamma over the first T/2 steps, then to gamma over the next T/2 (T >= 1, so
  // half >= 0.5).
  const double half = ramp_steps / 2.0, t = static_cast<double>(step);
  if (t <= half) return 0.95 * gamma * (t / half);
  return gamma * (0.95 + 0.05 * std::min(1.0, (t - half) / half));
}

float TargetedDropoutConfig::alpha_at(int64_t step) const {
  if (!ramp || ramp_steps <= 0) return alpha;
  return static_cast<float>(alpha * std::min(1.0, static_cast<double>(step) / ramp_steps));
}

std::string TargetedDropoutConfig::describe() const {
  if (!enabled()) return "";
  char buf[160];
  if (rescale)
    std::snprintf(buf, sizeof buf, "%s dropout p=%g", td_mode_name(mode), alpha);
  else
    std::snprintf(buf, sizeof buf, "td %s g=%g a=%g%s", td_mode_name(mode), gamma, alpha,
                  ramp ? " ramp" : "");
  return buf;
}

TargetedDropoutConfig::Mode parse_td_mode(const std::string& s) {
  if (s == "none") return TargetedDropoutConfig::Mode::None;
  if (s == "weight") return TargetedDropoutConfig::Mode::Weight;
  if (s == "unit") return TargetedDropoutConfig::Mode::Unit;
  fail("unknown targeted dropout mode '", s, "': expected none, weight or unit");
}

const char* td_mode_name(TargetedDropoutConfig::Mode m) {
  switch (m) {
    case TargetedDropoutConfig::Mode::None: return "none";
    case TargetedDropoutConfig::Mode::Weight: return "weight";
    case TargetedDropoutConfig::Mode::Unit: return "unit";
  }
  return "?";
}

// --- one layer ----------------------------------------------------------------------------

void TargetedWeight::configure(const TargetedDropoutConfig& cfg, const std::string& layer_name,
                               uint64_t layer_index) {
  cfg.validate("layer '" + layer_name + "'");
  // td_stream keeps 16 bits of the index: a later layer would repeat an earlier one's draws.
  TDROP_CHECK(layer_index < 65536, "targeted dropout: layer '", layer_name, "' is targeted layer ",
              layer_index, "; a model may have at most 65536 (each draws its own Philox stream)");
  cfg_ = cfg;
  name_ = layer_name;
  index_ = layer_index;
  pre_w_ = pre_mask_ = Tensor();
  pre_step_ = ~uint64_t{0};
  eval_src_ = eval_w_ = Tensor();  // computed under the old settings
}

TargetedWeight::Plan TargetedWeight::plan(const Tensor& weight, bool training,
                                          uint64_t step) const {
  Plan p{};
  p.rows = weight.size(0);
  p.n = p.rows ? weight.numel() / p.rows : 0;
  if (!cfg_.enabled() || (!training && cfg_.keep_all_in_eval)) return p;
  // Eval removes the final targeted set; training draws with the (ramped) rates.
  const double gamma = training ? cfg_.gamma_at(static_cast<int64_t>(step)) : cfg_.gamma;
  p.alpha = training ? cfg_.alpha_at(static_cast<int64_t>(step)) : 1.0f;
  p.k = td_count(gamma, cfg_.mode == TargetedDropoutConfig::Mode::Unit ? p.rows : p.n);
  p.active = p.k > 0 && p.alpha > 0.0f;
  return p;
}

namespace {

struct TargetedDropoutNode : Node {
  Tensor mask;
  int64_t rows, n;
  const char* name() const override { return "targeted_dropout"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor g = g_in.contiguous();
    Tensor out = Tensor::empty(g.shape(), g.dtype(), g.device());
    const auto* m = reinterpret_cast<const uint32_t*>(mask.raw_data());
    if (g.is_cuda()) td_mask_grad_cuda(g.data<float>(), m, rows, n, out.data<float>());
    else td_mask_grad_cpu(g.data<float>(), m, rows, n, out.data<float>());
    return {out};
  }
};

Tensor mask_tensor(int64_t rows, int64_t n, Device d) {
  return Tensor::empty({rows, mask_words_per_row(n) * 4}, DType::U8, d);
}

TdTask make_task(const TargetedDropoutConfig& cfg, const TargetedWeight::Plan& p, const Tensor& w,
                 const Tensor& w_out, const Tensor& mask, uint64_t step, uint64_t index,
                 const std::string& name) {
  TdTask t;
  t.w = w.data<float>();
  t.w_out = w_out.data<float>();
  t.mask = reinterpret_cast<uint32_t*>(mask.raw_data());
  t.rows = p.rows;
  t.n = p.n;
  t.k = p.k;
  t.drop_threshold = bernoulli_threshold(p.alpha);
  t.stream = td_stream(step, index);
  t.unit = cfg.mode == TargetedDropoutConfig::Mode::Unit;
  t.per_weight_draws = cfg.unit_per_weight_draws;
  t.name = name;
  return t;
}

void launch_cuda(const std::vector<TdTask>& tasks, uint64_t seed) {
  if (g_impl == TdCudaImpl::Fused) targeted_dropout_fused_cuda(tasks, seed, workspace());
  else targeted_dropout_unfused_cuda(tasks, seed, workspace());
}

void run_tasks(const std::vector<TdTask>& tasks, uint64_t seed, Device d) {
  if (d == Device::CPU) {
    for (const TdTask& t : tasks) targeted_dropout_cpu(t, seed);
    return;
  }
  launch_cuda(tasks, seed);
  td_check_nonfinite(tasks, workspace());
}

// The non-finite check of the last precomputed step, looked at one step later.
TdNonfiniteCheck& pending_check() {
  static TdNonfiniteCheck check;
  return check;
}

Tensor finish(const TargetedDropoutConfig& cfg, const Tensor& weight, Tensor w_out, Tensor mask,
              const TargetedWeight::Plan& p) {
  auto node = std::make_shared<TargetedDropoutNode>();
  node->mask = std::move(mask);
  node->rows = p.rows;
  node->n = p.n;
  Tensor out = record(w_out, node, {weight});
  if (cfg.rescale && p.alpha < 1.0f) out = mul_scalar(out, 1.0 / (1.0 - p.alpha));
  return out;
}

}  // namespace

void TargetedWeight::set_precomputed(const Tensor& w_prime, const Tensor& mask, uint64_t step) {
  pre_w_ = w_prime;
  pre_mask_ = mask;
  pre_step_ = step;
}

void TargetedWeight::set_eval_weight(const Tensor& weight, const Tensor& w_eval) {
  eval_src_ = w_eval.defined() ? weight : Tensor();
  eval_w_ = w_eval;
}

Tensor TargetedWeight::effective(const Tensor& weight, bool training, uint64_t seed,
                                 uint64_t step) {
  if (!training && eval_w_.defined() && eval_src_.same(weight) &&
      eval_w_.device() == weight.device())
    return eval_w_;
  const Plan p = plan(weight, training, step);
  if (!p.active) return weight;
  TDROP_CHECK(weight.dtype() == DType::F32, "targeted dropout: layer '", name_,
              "' needs an F32 weight, got ", weight.describe());
  if (training && pre_step_ == step && pre_w_.defined()) {
    Tensor w_out = pre_w_, mask = pre_mask_;
    pre_w_ = pre_mask_ = Tensor();  // used once
    return finish(cfg_, weight, w_out, mask, p);
  }
  const Tensor w = weight.contiguous();
  Tensor w_out = Tensor::empty(weight.shape(), DType::F32, weight.device());
  Tensor mask = mask_tensor(p.rows, p.n, weight.device());
  run_tasks({make_task(cfg_, p, w, w_out, mask, step, index_, name_)}, seed, weight.device());
  return finish(cfg_, weight, w_out, mask, p);
}

// --- whole model --------------------------------------------------------------------------

namespace {
void collect_targetable(Module& m, const std::string& prefix,
                        std::vector<std::pair<std::string, TargetableLayer*>>& out) {
  if (auto* t = dynamic_cast<TargetableLayer*>(&m); t && t->targetable())
    out.emplace_back(prefix, t);
  for (auto& [name, child] : m.children())
    collect_targetable(*child, prefix.empty() ? name : prefix + "." + name, out);
}
}  // namespace

std::vector<std::pair<std::string, TargetableLayer*>> targetable_layers(Module& model) {
  std::vector<std::pair<std::string, TargetableLayer*>> out;
  collect_targetable(model, "", out);
  return out;
}

void configure_targeted_dropout(Module& model, const TargetedDropoutConfig& cfg) {
  uint64_t index = 0;
  for (auto& [name, layer] : targetable_layers(model))
    layer->targeted().configure(cfg, name, index++);
}

SparsityReport measure_sparsity(Module& model) {
  NoGradGuard no_grad;
  SparsityReport r;
  auto zeros = [](const Tensor& t) {
    int64_t z = 0;
    for (double v : t.to_double_vector()) z += v == 0.0;
    return z;
  };
  // Targetable weights count as the eval-mode model uses them (targeted set removed).
  std::vector<const Tensor*> counted;
  for (auto& [name, layer] : targetable_layers(model)) {
    Tensor& w = layer->weight();
    const int64_t z = zeros(layer->targeted().effective(w, false, 0, 0));
    r.targeted_total += w.numel();
    r.targeted_zero += z;
    r.all_total += w.numel();
    r.all_zero += z;
    counted.push_back(&w);
  }
  for (auto& [name, p] : model.named_parameters()) {
    if (p.dim() < 2) continue;  // biases and norm scales are parameters, not weights
    bool seen = false;
    for (const Tensor* w : counted) seen = seen || w->same(p);
    if (seen) continue;
    r.all_total += p.numel();
    r.all_zero += zeros(p);
  }
  return r;
}

EvalWeightCache::EvalWeightCache(Module& model) {
  NoGradGuard no_grad;
  try {
    for (auto& [name, layer] : targetable_layers(model)) {
      TargetedWeight& td = layer->targeted();
      const Tensor& w = layer->weight();
      if (!td.plan(w, false, 0).active) continue;
      layers_.push_back(&td);  // first: clear() then reaches it whatever throws next
      td.set_eval_weight(w, td.effective(w, false, 0, 0));
    }
  } catch (...) {  // a NaN weight in a later layer: the earlier ones must not stay cached
    clear();
    throw;
  }
}

EvalWeightCache::~EvalWeightCache() { clear(); }

void EvalWeightCache::clear() {
  for (TargetedWeight* td : layers_) td->set_eval_weight(Tensor(), Tensor());
  layers_.clear();
}

void precompute_targeted_dropout(Module& model, uint64_t seed, uint64_t step) {
  if (model.device() != Device::CUDA) return;
  std::vector<TdTask> tasks;
  std::vector<std::pair<TargetedWeight*, std::pair<Tensor, Tensor>>> outputs;
  for (auto& [name, layer] : targetable_layers(model)) {
    TargetedWeight& td = layer->targeted();
    const Tensor& w = layer->weight();
    const TargetedWeight::Plan p = td.plan(w, model.training(), step);
    if (!p.active || !w.is_contiguous()) continue;
    Tensor w_out = Tensor::empty(w.shape(), DType::F32, w.device());
    Tensor mask = mask_tensor(p.rows, p.n, w.device());
    tasks.push_back(make_task(td.config(), p, w, w_out, mask, step, td.layer_index(),
                              td.layer_name()));
    outputs.push_back({&td, {w_out, mask}});
  }
  pending_check().finish();  // the previous step's weights: throws naming a non-finite layer
  if (tasks.empty()) return;
  launch_cuda(tasks, seed);
  pending_check().start(tasks, workspace());
  for (auto& [td, wm] : outputs) td->set_precomputed(wm.first, wm.second, step);
}

void finish_targeted_dropout_checks() { pending_check().finish(); }

}  // namespace tdrop
