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
  std::shared_ptr<Module> model = find_model(name).build(config);
  if (config.contains("td")) configure_targeted_dropout(*model, td_config_from_json(config["td"]));
  return model;
}

nlohmann::json td_config_to_json(const TargetedDropoutConfig& c) {
  return {{"mode", td_mode_name(c.mode)},
          {"gamma", c.gamma},
          {"alpha", c.alpha},
          {"ramp", c.ramp},
          {"ramp_steps", c.ramp_steps},
          {"unit_per_weight_draws", c.unit_per_weight_draws},
          {"keep_all_in_eval", c.keep_all_in_eval},
          {"rescale", c.rescale}};
}

TargetedDropoutConfig td_config_from_json(const nlohmann::json& j) {
  TDROP_CHECK(j.is_object(), "model config: 'td' must be an object, got ", j.dump());
  TargetedDropoutConfig c;
  try {
    c.mode = parse_td_mode(j.value("mode", std::string("none")));
    c.gamma = j.value("gamma", 0.0);
    c.alpha = j.value("alpha", 0.0f);
    c.ramp = j.value("ramp", false);
    c.ramp_steps = j.value("ramp_steps", int64_t{0});
    c.unit_per_weight_draws = j.value("unit_per_weight_draws", false);
    c.keep_all_in_eval = j.value("keep_all_in_eval", false);
    c.rescale = j.value("rescale", false);
  } catch (const nlohmann::json::exception& e) {
    fail("model config: bad 'td' entry ", j.dump(), ": ", e.what());
  }
  c.validate("model config");
  return c;
}

}  // namespace tdrop
