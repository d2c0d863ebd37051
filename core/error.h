// tdrop::Error and the checks that raise it. Every message names the op/layer/file and the
// offending shapes or values, so a user can act on it without a debugger.
#pragma once
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace tdrop {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The model layer whose forward (or backward) pass runs on this thread, the innermost one, so
// that an error raised deep inside an op, such as running out of memory, also says where in the
// model it was. Module::operator() opens one for every named layer; the autograd engine opens
// one with `backward` for each node, under the layer that recorded it. `path` must outlive it.
class LayerScope {
 public:
  explicit LayerScope(const std::string& path, bool backward = false);
  ~LayerScope();
  LayerScope(const LayerScope&) = delete;
  LayerScope& operator=(const LayerScope&) = delete;

 private:
  const std::string* outer_;
  bool outer_backward_;
};
// " (in layer 'PATH')", or " (in the backward pass of layer 'PATH')", while a LayerScope is
// open, else "".
std::string layer_context();
// The innermost open scope's path, "" outside any layer.
const std::string& current_layer();

// Builds the message from any streamable pieces: fail("linear: x ", shape_str(s), " ..."),
// and the layer it happened in.
template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  os << layer_context();
  throw Error(os.str());
}

inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace tdrop

#define TDROP_CHECK(cond, ...)                      \
  do {                                              \
    if (!(cond)) ::tdrop::fail(__VA_ARGS__);        \
  } while (0)
