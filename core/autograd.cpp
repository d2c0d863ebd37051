#include "core/autograd.h"

#include <atomic>
#include <unordered_map>

namespace tdrop {

namespace {
thread_local bool g_grad_enabled = true;
bool g_anomaly = false;

// acc += g, for a g of acc's shape. Between nodes, the first gradient is taken as it is (no
// copy unless it is a strided view) and later ones are summed into a fresh tensor: those
// gradients are never written in place, so a tensor that a node hands to two inputs (an add's)
// may be shared. A leaf's .grad is a copy on first write and then accumulated in place, so it
// never aliases a tensor some op might still hold.
void accumulate_between_nodes(Tensor& acc, const Tensor& g);
void accumulate_into_leaf(Tensor& acc, const Tensor& g);
}  // namespace

namespace {
std::atomic<int64_t> g_live_nodes{0};
}  // namespace

int64_t live_autograd_nodes() { return g_live_nodes.load(); }

Node::Node() : layer(current_layer()) { ++g_live_nodes; }

Node::~Node() {
  --g_live_nodes;
  std::vector<std::shared_ptr<Node>> pending;
  auto release_inputs = [&pending](std::vector<Tensor>& inputs) {
    for (Tensor& t : inputs)
      if (auto fn = t.take_grad_fn_if_last_owner()) pending.push_back(std::move(fn));
    inputs.clear();
  };
  release_inputs(inputs);
  while (!pending.empty()) {
    std::shared_ptr<Node> n = std::move(pending.back());
    pending.pop_back();
    // Only a node nobody else holds is dismantled here; its inputs join the queue, so its own
    // destructor (when n goes out of scope) finds nothing left to recurse into.
    if (n.use_count() == 1) release_inputs(n->inputs);
  }
}

bool grad_enabled() { return g_grad_enabled; }
void set_anomaly_detection(bool on) { g_anomaly = on; }
bool anomaly_detection() { return g_anomaly; }
NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

}  // namespace tdrop

// The accumulation needs an add kernel, which lives in kernels/ (arrows point down): the
// engine reaches it through this hook, set by kernels/ at static-init time.
#include "core/grad_accumulate.h"

namespace tdrop {
namespace {
void accumulate_between_nodes(Tensor& acc, const Tensor& g) {
  if (!acc.defined()) {
    acc = g.contiguous();  // nodes see contiguous gradients; a copy only for a strided view
    return;
  }
  acc = grad_sum_hook()(acc, g);
}

void accumulate_into_leaf(Tensor& acc, const Tensor& g) {
  if (!acc.defined()) {
    acc = g.clone();
    return;
  }
  // A .grad given by hand (set_grad) may have any shape.
  TDROP_CHECK(acc.shape() == g.shape(), "autograd: a leaf's .grad has shape ",
              shape_str(acc.shape()), ", which a gradient of shape ", shape_str(g.shape()),
              " cannot accumulate into");
  grad_accumulate_hook()(acc, g);
}
}  // namespace

void run_backward(const Tensor& root, const Tensor& seed) {
  NoGradGuard no_grad;
  if (!root.grad_fn()) {  // a leaf: its gradient is the seed
    Tensor acc = root.grad();
    accumulate_into_leaf(acc, seed);  // Tensor::backward checked the seed's shape
    const_cast<Tensor&>(root).set_grad(acc);
    return;
  }
  // 1. Count, for each node, how many consumers will hand it a gradient (iterative DFS).
  std::unordered_map<Node*, int> pending;
  std::vector<Node*> stack{root.grad_fn().get()};
  pending[root.grad_fn().get()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Tensor& in : n->inputs) {
      if (!in.defined() || !in.grad_fn()) continue;
      Node* m = in.grad_fn().get();
      auto [it, inserted] = pending.try_emplace(m, 0);
      ++it->second;
      if (inserted) stack.push_back(m);
    }
  }
  // 2. Kahn's algorithm: a node is taken once all of its consumers have contributed. One that
  // received no gradient (its consumers returned none for it) runs nothing, but still releases
  // its own inputs, so that nodes below it that other paths feed still run.
  std::unordered_map<Node*, Tensor> grads;
  grads[root.grad_fn().get()] = seed;
  std::vector<std::shared_ptr<Node>> ready{root.grad_fn()};
  auto release = [&](const Tensor& in) {  // one of in's consumers is done with it
    if (--pending[in.grad_fn().get()] == 0) ready.push_back(in.grad_fn());
  };
  while (!ready.empty()) {
    std::shared_ptr<Node> node = std::move(ready.back());
    ready.pop_back();
    const auto got = grads.find(node.get());
    if (got == grads.end()) {
      for (const Tensor& in : node->inputs)
        if (in.defined() && in.grad_fn()) release(in);
      continue;
    }
    const LayerScope scope(node->layer, /*backward=*/true);
    Tensor g = std::move(got->second);
    grads.erase(got);
    std::vector<Tensor> in_grads = node->backward(g);
    TDROP_CHECK(in_grads.size() == node->inputs.size(), "autograd: ", node->name(), " returned ",
                in_grads.size(), " gradients for ", node->inputs.size(), " inputs");
    for (size_t i = 0; i < in_grads.size(); ++i) {
      if (g_anomaly && in_grads[i].defined())
        anomaly_check_hook()(in_grads[i], node->name(), "gradient");
      Tensor& in = node->inputs[i];
      const Tensor& gi = in_grads[i];
      if (!in.defined()) continue;
      // A gradient of the wrong shape is the node's error, caught where it is made: passed on,
      // it would reach the next node's backward (or a .grad) as garbage.
      TDROP_CHECK(!gi.defined() || gi.shape() == in.shape(), "autograd: the gradient ",
                  node->name(), " returned for its input ", i, " has shape ",
                  shape_str(gi.shape()), ", but that input has shape ", shape_str(in.shape()));
      if (in.grad_fn()) {  // every counted edge is released, whether a gradient came or not
        if (gi.defined()) accumulate_between_nodes(grads[in.grad_fn().get()], gi);
        release(in);
      } else if (in.requires_grad() && gi.defined()) {
        Tensor acc = in.grad();
        accumulate_into_leaf(acc, gi);
        in.set_grad(acc);
      }
    }
  }
}

}  // namespace tdrop
