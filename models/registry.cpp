#include "models/registry.h"

#include <map>

namespace tdrop {

namespace {
std::map<std::string, ModelInfo>& table() {
  static std::map<std::string, ModelInfo> t;
  return t;
}
}  // namespace

bool register_model(ModelInfo info) {
  const std::string name = info.name;
  table()[name] = std::move(info);
  return true;
}

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (auto& [name, info] : table()) names.push_back(name);
  return names;
}

const ModelInfo& find_model(const std::string& name) {
  auto it = table().find(name);
  if (it == table().end()) {
    std::string known;
    for (auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
    fail("unknown model '", name, "': known models are ", known);
  }
  return it->second;
}

std::shared_ptr<Module> build_model(const std::string& name, nlohmann::json& config) {
  if (!config.is_object()) config = nlohmann::json::object();
  return find_model(name).build(config);
}

}  // namespace tdrop
