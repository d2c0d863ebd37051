// Optimizers over a list of parameter handles: SGD (momentum, Nesterov, weight decay) and
// Adam / AdamW. Each update is one fused pass per parameter (kernels/optim_update).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tdrop {

class Optimizer {
 public:
  explicit Optimizer(std::vector<Tensor> params, float lr);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  void zero_grad();
  void set_lr(float lr) { lr_ = lr; }
  float lr() const { return lr_; }
  int64_t steps_taken() const { return steps_; }
  // Everything a resumed run needs (momentum buffers, Adam moments), named "<slot>.<index>".
  virtual std::vector<std::pair<std::string, Tensor>> state() const = 0;
  // Restores state() and the step count; `source` names the file in errors.
  void load_state(const std::map<std::string, Tensor>& state, int64_t steps,
                  const std::string& source);

 protected:
  // A state() entry that files written before it existed lack: true leaves its initial value.
  virtual bool may_be_missing(const std::string&) const { return false; }
  // Checks restored state against the restored step count (throws naming `source`).
  virtual void check_loaded(const std::string&) const {}

  std::vector<Tensor> params_;
  float lr_;
  int64_t steps_ = 0;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, float lr, float momentum = 0.0f, float weight_decay = 0.0f,
      bool nesterov = false);
  void step() override;
  std::vector<std::pair<std::string, Tensor>> state() const override;

 private:
  float momentum_, weight_decay_;
  bool nesterov_;
  std::vector<Tensor> buf_;
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, float lr, float weight_decay = 0.0f, bool decoupled = false,
       float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f);
  void step() override;
  std::vector<std::pair<std::string, Tensor>> state() const override;

 private:
  bool may_be_missing(const std::string& name) const override { return name == "skipped"; }
  void check_loaded(const std::string& source) const override;

  float weight_decay_, beta1_, beta2_, eps_;
  bool decoupled_;
  std::vector<Tensor> m_, v_;
  // Per parameter, the steps it had no gradient: its bias correction counts its own steps
  // (steps_ - skipped), as PyTorch's per-parameter step does. F32 on the CPU, exact to 2^24.
  Tensor skipped_;
};

// name: "sgd", "nesterov" (SGD with Nesterov momentum), "adam", "adamw".
std::unique_ptr<Optimizer> make_optimizer(const std::string& name, std::vector<Tensor> params,
                                          float lr, float momentum, float weight_decay);

}  // namespace tdrop
