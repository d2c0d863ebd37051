// The model zoo by name. A model is fully described by (name, config), which a checkpoint stores
// in its metadata, so a checkpoint alone rebuilds its model.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "layers/module.h"
#include "layers/targeted.h"

namespace tdrop {

struct ModelInfo {
  std::string name, summary;
  // Builds the model from its config (input shape, classes, ...); the config is completed with
  // defaults in place so it can be saved and replayed.
  std::function<std::shared_ptr<Module>(nlohmann::json& config)> build;
  int64_t input_size = 0;  // square input the network is built for (0: any); smaller images are padded
};

// Registers a model at static-init time: static bool reg = register_model({...});
bool register_model(ModelInfo info);
std::vector<std::string> model_names();
const ModelInfo& find_model(const std::string& name);
// Builds the model; when config has a "td" object, targeted dropout (or an untargeted dropout
// baseline) is configured on every targetable layer.
std::shared_ptr<Module> build_model(const std::string& name, nlohmann::json& config);

// The "td" object of a model config.
nlohmann::json td_config_to_json(const TargetedDropoutConfig& cfg);
TargetedDropoutConfig td_config_from_json(const nlohmann::json& j);

}  // namespace tdrop
