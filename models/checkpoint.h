// Checkpoints are safetensors files: every parameter as a tensor, and in `__metadata__` the
// model's name and config (JSON), so `load_checkpoint` rebuilds the model from the file alone.
#pragma once
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "data/fashion_mnist.h"
#include "layers/module.h"

namespace tdrop {

struct Checkpoint {
  std::string model_name;
  nlohmann::json model_config;
  std::map<std::string, std::string> metadata;  // everything in __metadata__
  std::shared_ptr<Module> model;                // on CPU, in eval mode
};

// Atomic: a crash mid-write leaves the previous file intact.
void save_checkpoint(const std::string& path, const Module& model, const std::string& model_name,
                     const nlohmann::json& model_config,
                     const std::map<std::string, std::string>& extra_metadata = {});
Checkpoint load_checkpoint(const std::string& path);
// Throws naming the file, the tensor and the index of the first NaN/Inf in `state`.
void check_state_finite(const std::map<std::string, Tensor>& state, const std::string& path);
// Throws naming the checkpoint and the dataset when the model was trained on other inputs
// (the config's input_shape [C, H, W]) or classes than `data` holds: else the first layer
// reports a shape error that names neither.
void check_checkpoint_fits(const Checkpoint& ck, const std::string& path, const ImageDataset& data,
                           const std::string& dataset);

}  // namespace tdrop
