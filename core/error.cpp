#include "core/error.h"

namespace tdrop {

namespace {
thread_local const std::string* g_layer = nullptr;
}  // namespace

LayerScope::LayerScope(const std::string& path) : outer_(g_layer) {
  if (!path.empty()) g_layer = &path;
}

LayerScope::~LayerScope() { g_layer = outer_; }

std::string layer_context() { return g_layer ? " (in layer '" + *g_layer + "')" : std::string(); }

}  // namespace tdrop
