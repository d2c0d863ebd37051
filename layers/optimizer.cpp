#include "layers/optimizer.h"

#include <cmath>

#include "kernels/optim_update.h"

namespace tdrop {

Optimizer::Optimizer(std::vector<Tensor> params, float lr) : params_(std::move(params)), lr_(lr) {
  TDROP_CHECK(lr >= 0.0f, "optimizer: learning rate ", lr, " is negative");
  for (const Tensor& p : params_)
    TDROP_CHECK(p.dtype() == DType::F32 && p.is_contiguous(),
                "optimizer: parameters must be contiguous F32, got ", p.describe());
}

void Optimizer::zero_grad() {
  for (Tensor& p : params_) p.set_grad(Tensor());
}

void Optimizer::load_state(const std::map<std::string, Tensor>& saved, int64_t steps,
                           const std::string& source) {
  for (auto& [name, t] : state()) {
    auto it = saved.find(name);
    if (it == saved.end() && may_be_missing(name)) continue;
    TDROP_CHECK(it != saved.end(), source, ": optimizer state '", name, "' is missing");
    TDROP_CHECK(it->second.shape() == t.shape(), source, ": optimizer state '", name,
                "' has shape ", shape_str(it->second.shape()), ", expected ", shape_str(t.shape()));
    Tensor dst = t;
    dst.copy_(it->second);
  }
  steps_ = steps;
  check_loaded(source);
}

SGD::SGD(std::vector<Tensor> params, float lr, float momentum, float weight_decay, bool nesterov)
    : Optimizer(std::move(params), lr), momentum_(momentum), weight_decay_(weight_decay),
      nesterov_(nesterov) {
  TDROP_CHECK(momentum >= 0.0f && momentum < 1.0f, "SGD: momentum ", momentum,
              " is outside [0, 1)");
  TDROP_CHECK(weight_decay >= 0.0f, "SGD: weight decay ", weight_decay, " is negative");
  TDROP_CHECK(!nesterov || momentum > 0.0f, "SGD: Nesterov needs a momentum > 0");
  for (const Tensor& p : params_) buf_.push_back(Tensor::zeros(p.shape(), DType::F32, p.device()));
}

std::vector<std::pair<std::string, Tensor>> SGD::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < buf_.size(); ++i) out.emplace_back("momentum." + std::to_string(i), buf_[i]);
  return out;
}

void SGD::step() {
  const SgdParams sp{lr_, momentum_, weight_decay_, nesterov_};
  std::vector<Tensor> w, g, buf;  // the CUDA parameters: one launch for all of them
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& grad = params_[i].grad();
    if (!grad.defined()) continue;
    if (params_[i].is_cuda()) {
      w.push_back(params_[i]);
      g.push_back(grad.contiguous());
      buf.push_back(buf_[i]);
    } else {
      sgd_update_cpu(params_[i], grad.contiguous(), buf_[i], sp, steps_ == 0);
    }
  }
  if (!w.empty()) sgd_update_multi_cuda(w, g, buf, sp, steps_ == 0);
  ++steps_;
}

Adam::Adam(std::vector<Tensor> params, float lr, float weight_decay, bool decoupled, float beta1,
           float beta2, float eps)
    : Optimizer(std::move(params), lr), weight_decay_(weight_decay), beta1_(beta1), beta2_(beta2),
      eps_(eps), decoupled_(decoupled) {
  TDROP_CHECK(beta1 >= 0.0f && beta1 < 1.0f && beta2 >= 0.0f && beta2 < 1.0f,
              "Adam: betas (", beta1, ", ", beta2, ") must lie in [0, 1)");
  TDROP_CHECK(weight_decay >= 0.0f, "Adam: weight decay ", weight_decay, " is negative");
  for (const Tensor& p : params_) {
    m_.push_back(Tensor::zeros(p.shape(), DType::F32, p.device()));
    v_.push_back(Tensor::zeros(p.shape(), DType::F32, p.device()));
  }
  skipped_ = Tensor::zeros({static_cast<int64_t>(params_.size())});
}

void Adam::check_loaded(const std::string& source) const {
  const float* skipped = skipped_.data<float>();
  for (size_t i = 0; i < params_.size(); ++i)
    TDROP_CHECK(skipped[i] >= 0 && skipped[i] <= static_cast<float>(steps_) &&
                    skipped[i] == std::floor(skipped[i]),
                source, ": optimizer state 'skipped' of parameter ", i, " is ", skipped[i],
                ", not a step count within the ", steps_, " steps taken");
}

std::vector<std::pair<std::string, Tensor>> Adam::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < m_.size(); ++i) {
    out.emplace_back("m." + std::to_string(i), m_[i]);
    out.emplace_back("v." + std::to_string(i), v_[i]);
  }
  out.emplace_back("skipped", skipped_);
  return out;
}

void Adam::step() {
  ++steps_;
  float* skipped = skipped_.data<float>();
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& g = params_[i].grad();
    if (!g.defined()) {
      ++skipped[i];
      continue;
    }
    AdamParams ap{lr_, beta1_, beta2_, eps_, weight_decay_, decoupled_, 0};
    ap.step = steps_ - static_cast<int64_t>(skipped[i]);  // this parameter's own steps
    const Tensor gc = g.contiguous();
    if (params_[i].is_cuda()) adam_update_cuda(params_[i], gc, m_[i], v_[i], ap);
    else adam_update_cpu(params_[i], gc, m_[i], v_[i], ap);
  }
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, std::vector<Tensor> params,
                                          float lr, float momentum, float weight_decay) {
  if (name == "sgd") return std::make_unique<SGD>(std::move(params), lr, momentum, weight_decay);
  if (name == "nesterov")
    return std::make_unique<SGD>(std::move(params), lr, momentum, weight_decay, true);
  if (name == "adam") return std::make_unique<Adam>(std::move(params), lr, weight_decay, false);
  if (name == "adamw") return std::make_unique<Adam>(std::move(params), lr, weight_decay, true);
  fail("unknown optimizer '", name, "': expected sgd, nesterov, adam or adamw");
}

}  // namespace tdrop
