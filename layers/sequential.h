// Sequential: children named "0", "1", ... applied in order.
#pragma once
#include "layers/module.h"

namespace tdrop {

class Sequential : public Module {
 public:
  template <class M>
  std::shared_ptr<M> add(std::shared_ptr<M> m) {
    return register_module(std::to_string(children().size()), std::move(m));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = x;
    for (auto& [name, child] : children()) h = child->forward(h);
    return h;
  }
  std::string type_name() const override { return "Sequential"; }
};

}  // namespace tdrop
