// Reverse-mode autodiff on a dynamic tape. Each op that needs a gradient attaches a Node to its
// output; Node::inputs are the tensors it read. backward() walks the graph iteratively
// (no recursion, so deep graphs cannot overflow the stack) in reverse topological order.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tdrop {

struct Node {
  Node();
  // Releases the graph behind this node iteratively: a chain of a million ops would otherwise
  // be destroyed by a million nested destructor calls and overflow the stack.
  virtual ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  virtual const char* name() const = 0;
  // Given dLoss/dOutput, returns dLoss/dInput for each entry of `inputs` (undefined where an
  // input needs no gradient). Runs with gradient recording off.
  virtual std::vector<Tensor> backward(const Tensor& grad_out) = 0;
  std::vector<Tensor> inputs;
  // The layer whose forward recorded this node ("" outside any): errors in its backward name it.
  const std::string layer;
};

// Nodes alive now. A node must not hold its own output (the output holds the node: a cycle
// that leaks the whole graph of every step); tests check each op's graph is freed with it.
int64_t live_autograd_nodes();

// Gradient recording is on by default; NoGradGuard turns it off for its scope (evaluation,
// optimizer updates, backward itself).
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True when recording is on and any input requires a gradient.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);

// Anomaly detection: when on, every recorded op's output and every gradient the engine
// computes is checked for NaN/Inf, and the first one raises an Error naming the op. The check
// itself is a kernel, so kernels/ installs it through this hook.
void set_anomaly_detection(bool on);
bool anomaly_detection();
using AnomalyCheckFn = void (*)(const Tensor& t, const char* op, const char* what);
AnomalyCheckFn& anomaly_check_hook();

// Attaches `node` (with its inputs) to `out` when any input requires a gradient.
template <class N>
Tensor record(Tensor out, std::shared_ptr<N> node, std::vector<Tensor> inputs) {
  if (anomaly_detection()) anomaly_check_hook()(out, node->name(), "output");
  bool needed = false;
  if (grad_enabled())
    for (const Tensor& t : inputs) needed = needed || (t.defined() && t.requires_grad());
  if (!needed) return out;
  node->inputs = std::move(inputs);
  out.set_grad_fn(std::move(node));
  out.set_requires_grad(true);
  return out;
}

// Runs backward from `root` with seed gradient `seed` (same shape as root).
void run_backward(const Tensor& root, const Tensor& seed);

}  // namespace tdrop
