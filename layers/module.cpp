#include "layers/module.h"

#include <set>

namespace tdrop {

Tensor Module::register_parameter(std::string name, Tensor t) {
  t.set_requires_grad(true);
  params_.emplace_back(std::move(name), t);
  return t;
}

Tensor Module::register_buffer(std::string name, Tensor t) {
  t.set_requires_grad(false);
  buffers_.emplace_back(std::move(name), t);
  return t;
}

void Module::set_path(const std::string& path) {
  path_ = path;
  for (const auto& [name, child] : children_) child->set_path(path + "." + name);
}

void Module::collect(const std::string& prefix, NamedTensors Module::*which,
                     NamedTensors& out) const {
  for (const auto& [name, t] : this->*which) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", which, out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  NamedTensors out;
  collect("", &Module::params_, out);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  NamedTensors out;
  collect("", &Module::buffers_, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::zero_grad() {
  for (auto& [name, t] : params_) t.set_grad(Tensor());
  for (auto& [name, child] : children_) child->zero_grad();
}

void Module::to(Device d) {
  for (auto* list : {&params_, &buffers_})
    for (auto& [name, t] : *list)
      if (t.device() != d) t.set_data(t.to(d));
  device_ = d;
  for (auto& [name, child] : children_) child->to(d);
}

void Module::reset_parameters(uint64_t seed) {
  uint64_t next = 0;
  reset_recursive(seed, next);
}

void Module::reset_recursive(uint64_t seed, uint64_t& next_stream) {
  init_own_parameters(seed, next_stream);
  for (auto& [name, child] : children_) child->reset_recursive(seed, next_stream);
}

void Module::set_rng(uint64_t seed, uint64_t step) {
  uint64_t next = 0;
  set_rng_recursive(seed, step, next);
}

void Module::set_rng_recursive(uint64_t seed, uint64_t step, uint64_t& next_id) {
  rng_seed_ = seed;
  rng_step_ = step;
  rng_id_ = next_id++;
  for (auto& [name, child] : children_) child->set_rng_recursive(seed, step, next_id);
}

void Module::load_state(const std::map<std::string, Tensor>& state, const std::string& source) {
  std::set<std::string> used;
  NamedTensors targets = named_parameters();
  const size_t num_params = targets.size();
  for (auto& entry : named_buffers()) targets.push_back(entry);
  for (size_t i = 0; i < targets.size(); ++i) {
    const auto& [name, param] = targets[i];
    const char* kind = i < num_params ? "parameter" : "buffer";
    auto it = state.find(name);
    TDROP_CHECK(it != state.end(), source, ": ", kind, " '", name, "' ",
                shape_str(param.shape()), " is missing");
    TDROP_CHECK(it->second.shape() == param.shape(), source, ": ", kind, " '", name,
                "' has shape ", shape_str(it->second.shape()), " but the model expects ",
                shape_str(param.shape()));
    Tensor dst = param;
    dst.copy_(it->second);
    used.insert(name);
  }
  for (auto& [name, t] : state)
    TDROP_CHECK(used.count(name), source, ": tensor '", name, "' ", shape_str(t.shape()),
                " does not belong to this model");
}

}  // namespace tdrop
