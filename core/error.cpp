#include "core/error.h"

namespace tdrop {

namespace {
thread_local const std::string* g_layer = nullptr;
thread_local bool g_backward = false;
const std::string kNoLayer;
}  // namespace

LayerScope::LayerScope(const std::string& path, bool backward)
    : outer_(g_layer), outer_backward_(g_backward) {
  if (path.empty()) return;  // an unnamed module (the root) keeps its caller's scope
  g_layer = &path;
  g_backward = backward;
}

LayerScope::~LayerScope() {
  g_layer = outer_;
  g_backward = outer_backward_;
}

std::string layer_context() {
  if (!g_layer) return {};
  return (g_backward ? " (in the backward pass of layer '" : " (in layer '") + *g_layer + "')";
}

const std::string& current_layer() { return g_layer ? *g_layer : kNoLayer; }

}  // namespace tdrop
