// Sequential: children named "0", "1", ... applied in order. A BatchNorm2d directly followed by
// a ReLU runs as one pass (batch norm's fused ReLU epilogue, the same bits as the two modules
// one after the other), saving a read and a write of the activations.
#pragma once
#include "layers/activation.h"
#include "layers/batch_norm.h"
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
    const auto& kids = children();
    for (size_t i = 0; i < kids.size(); ++i) {
      auto* bn = dynamic_cast<BatchNorm2d*>(kids[i].second.get());
      if (bn != nullptr && i + 1 < kids.size() && dynamic_cast<ReLU*>(kids[i + 1].second.get())) {
        h = bn->forward(h, Tensor(), /*relu=*/true);
        ++i;  // the ReLU is done
        continue;
      }
      h = (*kids[i].second)(h);
    }
    return h;
  }
  std::string type_name() const override { return "Sequential"; }
};

}  // namespace tdrop
