#include "models/checkpoint.h"

#include <cstring>

#include "core/safetensors.h"
#include "models/registry.h"

namespace tdrop {

void save_checkpoint(const std::string& path, const Module& model, const std::string& model_name,
                     const nlohmann::json& model_config,
                     const std::map<std::string, std::string>& extra_metadata) {
  SafetensorsFile f;
  auto tensors = model.named_parameters();
  for (auto& b : model.named_buffers()) tensors.push_back(b);  // e.g. BatchNorm running stats
  for (auto& [name, t] : tensors) {
    const Tensor c = t.to(Device::CPU).contiguous();
    RawTensor r;
    r.dtype = dtype_name(c.dtype());
    r.shape = c.shape();
    r.bytes.assign(static_cast<const char*>(c.raw_data()),
                   static_cast<size_t>(c.numel()) * dtype_size(c.dtype()));
    f.tensors[name] = std::move(r);
  }
  f.metadata = extra_metadata;
  f.metadata["format"] = "tdrop";
  f.metadata["model"] = model_name;
  f.metadata["config"] = model_config.dump();
  save_safetensors(path, f);
}

Checkpoint load_checkpoint(const std::string& path) {
  SafetensorsFile f = load_safetensors(path);
  Checkpoint ck;
  auto it = f.metadata.find("model");
  TDROP_CHECK(it != f.metadata.end(), path,
              ": not a tdrop checkpoint (no 'model' entry in __metadata__)");
  ck.model_name = it->second;
  auto cit = f.metadata.find("config");
  TDROP_CHECK(cit != f.metadata.end(), path, ": no 'config' entry in __metadata__");
  try {
    ck.model_config = nlohmann::json::parse(cit->second);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": model config in __metadata__ is not valid JSON: ", e.what());
  }
  ck.metadata = f.metadata;
  ck.model = build_model(ck.model_name, ck.model_config);
  std::map<std::string, Tensor> state;
  for (auto& [name, r] : f.tensors) {
    TDROP_CHECK(r.dtype == "F32", path, ": tensor '", name, "' has dtype ", r.dtype,
                "; tdrop checkpoints hold F32 parameters");
    Tensor t = Tensor::empty(r.shape, DType::F32, Device::CPU);
    std::memcpy(t.raw_data(), r.bytes.data(), r.bytes.size());
    state[name] = t;
  }
  ck.model->load_state(state, path);
  ck.model->eval();
  return ck;
}

}  // namespace tdrop
