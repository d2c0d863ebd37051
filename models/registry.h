// The model zoo by name. A model is fully described by (name, config), which a checkpoint stores
// in its metadata, so a checkpoint alone rebuilds its model.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "layers/module.h"

namespace tdrop {

struct ModelInfo {
  std::string name, summary;
  // Builds the model from its config (input shape, classes, ...); the config is completed with
  // defaults in place so it can be saved and replayed.
  std::function<std::shared_ptr<Module>(nlohmann::json& config)> build;
};

// Registers a model at static-init time: static bool reg = register_model({...});
bool register_model(ModelInfo info);
std::vector<std::string> model_names();
const ModelInfo& find_model(const std::string& name);
std::shared_ptr<Module> build_model(const std::string& name, nlohmann::json& config);

}  // namespace tdrop
