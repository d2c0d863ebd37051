// Module: a node of the model tree. It owns named parameters and child modules, knows whether it
// is training, and can move itself between devices. Parameters are Tensor handles, so an
// optimizer holding the same handles updates the module's weights in place.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace tdrop {

class Module {
 public:
  virtual ~Module() = default;
  virtual Tensor forward(const Tensor& x) = 0;
  // forward, with errors raised inside naming this layer's path. Parents call children this way.
  Tensor operator()(const Tensor& x) {
    const LayerScope scope(path_);
    return forward(x);
  }
  // "layer2.3.conv1": the names from the root model down to this module ("" for the root).
  const std::string& path() const { return path_; }

  // "Linear", "ReLU", ... and a one-line description with the layer's settings.
  virtual std::string type_name() const = 0;
  virtual std::string describe() const { return type_name(); }

  // Parameters of this module and its children, named "child.param" (e.g. "0.weight").
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  int64_t num_parameters() const;
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const {
    return children_;
  }
  const std::vector<std::pair<std::string, Tensor>>& own_parameters() const { return params_; }
  // Non-trainable state such as BatchNorm's running statistics, named like parameters. Buffers
  // move with to() and are restored by load_state(), so checkpoints should save them next to
  // named_parameters(); they are not in parameters() (no optimizer, not in num_parameters()).
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;

  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }
  void zero_grad();
  void to(Device d);
  Device device() const { return device_; }

  // Draws every parameter from Philox under `seed` (one stream per parameter, in order), so the
  // same seed gives the same initial model on any device.
  void reset_parameters(uint64_t seed);
  // Sets the randomness of stochastic layers for the next forward: (seed, training step).
  void set_rng(uint64_t seed, uint64_t step);

  // Copies values from `state` (name -> tensor) into the parameters and buffers; every one must
  // be present with its exact shape. `source` names the checkpoint in errors.
  void load_state(const std::map<std::string, Tensor>& state, const std::string& source);

 protected:
  // Returns a handle sharing the registered tensor (moves between devices keep it valid).
  Tensor register_parameter(std::string name, Tensor t);
  // Same for a buffer: the tensor never requires a gradient.
  Tensor register_buffer(std::string name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(std::string name, std::shared_ptr<M> m) {
    m->set_path(path_.empty() ? name : path_ + "." + name);
    children_.emplace_back(std::move(name), m);
    return m;
  }
  // Fills this module's own parameters; `next_stream` numbers parameters across the model.
  virtual void init_own_parameters(uint64_t seed, uint64_t& next_stream) {}

  uint64_t rng_seed_ = 0, rng_step_ = 0, rng_id_ = 0;

 private:
  using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
  void collect(const std::string& prefix, NamedTensors Module::*which, NamedTensors& out) const;
  void reset_recursive(uint64_t seed, uint64_t& next_stream);
  void set_rng_recursive(uint64_t seed, uint64_t step, uint64_t& next_id);
  // Sets this module's path and its descendants' below it (a subtree built before its parent
  // registers it learns its full path then).
  void set_path(const std::string& path);

  std::vector<std::pair<std::string, Tensor>> params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
  Device device_ = Device::CPU;
  std::string path_;
};

}  // namespace tdrop
