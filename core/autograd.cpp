#include "core/autograd.h"

#include <atomic>
#include <unordered_map>

namespace tdrop {

namespace {
thread_local bool g_grad_enabled = true;
bool g_anomaly = false;

// acc += g. Between nodes, the first gradient is taken as it is (no copy unless it is a
// strided view) and later ones are summed into a fresh tensor: those gradients are never
// written in place, so a tensor that a node hands to two inputs (an add's) may be shared. A
// leaf's .grad is a copy on first write and then accumulated in place, so it never aliases a
// tensor some op might still hold.
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
void check_same_shape(const Tensor& acc, const Tensor& g) {
  TDROP_CHECK(acc.shape() == g.shape(), "autograd: gradient of shape ", shape_str(g.shape()),
              " cannot accumulate into ", shape_str(acc.shape()));
}

void accumulate_between_nodes(Tensor& acc, const Tensor& g) {
  if (!acc.defined()) {
    acc = g.contiguous();  // nodes see contiguous gradients; a copy only for a strided view
    return;
  }
  check_same_shape(acc, g);
  acc = grad_sum_hook()(acc, g);
}

void accumulate_into_leaf(Tensor& acc, const Tensor& g) {
  if (!acc.defined()) {
    acc = g.clone();
    return;
  }
  check_same_shape(acc, g);
  grad_accumulate_hook()(acc, g);
}
}  // namespace

void run_backward(const Tensor& root, const Tensor& seed) {
  NoGradGuard no_grad;
  if (!root.grad_fn()) {  // a leaf: its gradient is the seed
    Tensor acc = root.grad();
    accumulate_into_leaf(acc, seed);
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
  // 2. Kahn's algorithm: a node runs once all of its consumers have contributed.
  std::unordered_map<Node*, Tensor> grads;
  grads[root.grad_fn().get()] = seed;
  std::vector<std::shared_ptr<Node>> ready{root.grad_fn()};
  while (!ready.empty()) {
    std::shared_ptr<Node> node = std::move(ready.back());
    ready.pop_back();
    const LayerScope scope(node->layer, /*backward=*/true);
    Tensor g = std::move(grads[node.get()]);
    grads.erase(node.get());
    std::vector<Tensor> in_grads = node->backward(g);
    TDROP_CHECK(in_grads.size() == node->inputs.size(), "autograd: ", node->name(), " returned ",
                in_grads.size(), " gradients for ", node->inputs.size(), " inputs");
    for (size_t i = 0; i < in_grads.size(); ++i) {
      if (g_anomaly && in_grads[i].defined())
        anomaly_check_hook()(in_grads[i], node->name(), "gradient");
      Tensor& in = node->inputs[i];
      if (!in.defined() || !in.requires_grad()) continue;
      const Tensor& gi = in_grads[i];
      if (in.grad_fn()) {
        Node* m = in.grad_fn().get();
        if (gi.defined()) accumulate_between_nodes(grads[m], gi);
        if (--pending[m] == 0) {
          if (grads.count(m)) ready.push_back(in.grad_fn());
          else grads.erase(m);
        }
      } else if (gi.defined()) {
        Tensor acc = in.grad();
        accumulate_into_leaf(acc, gi);
        in.set_grad(acc);
      }
    }
  }
}

}  // namespace tdrop
