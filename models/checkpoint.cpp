#include "models/checkpoint.h"

#include "core/safetensors.h"
#include "models/registry.h"

namespace tdrop {
namespace {

// A valid model config nests a few levels ({"td": {...}, "hidden": [...]}); deeper JSON is
// refused while parsing, before code that prints or walks it recursively can overflow the stack.
constexpr int kMaxConfigDepth = 16;


bool has_control(const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7F) return true;
  return false;
}

}  // namespace

void save_checkpoint(const std::string& path, const Module& model, const std::string& model_name,
                     const nlohmann::json& model_config,
                     const std::map<std::string, std::string>& extra_metadata) {
  SafetensorsFile f;
  auto tensors = model.named_parameters();
  for (auto& b : model.named_buffers()) tensors.push_back(b);  // e.g. BatchNorm running stats
  for (auto& [name, t] : tensors) f.tensors[name] = to_raw_tensor(t);
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
    ck.model_config = nlohmann::json::parse(
        cit->second, [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json&) {
          if ((ev == nlohmann::json::parse_event_t::object_start ||
               ev == nlohmann::json::parse_event_t::array_start) &&
              depth >= kMaxConfigDepth)
            fail(path, ": model config in __metadata__ nests deeper than ", kMaxConfigDepth,
                 " levels");
          return true;
        });
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": model config in __metadata__ is not valid JSON: ", printable(e.what()));
  }
  TDROP_CHECK(ck.model_config.is_object(), path,
              ": model config in __metadata__ is not a JSON object");
  ck.metadata = f.metadata;
  // The config comes from the file: a value of the wrong type or range is an error about it.
  try {
    ck.model = build_model(ck.model_name, ck.model_config);
  } catch (const Error& e) {
    fail(path, ": model '", printable(ck.model_name), "': ", printable(e.what()));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": model '", printable(ck.model_name), "': ", printable(e.what()));
  }
  std::map<std::string, Tensor> state;
  for (auto& [name, r] : f.tensors) {
    TDROP_CHECK(!has_control(name), path, ": tensor name \"", printable(name),
                "\" contains control characters");
    state[name] = f32_tensor_from_raw(r, name, path);
  }
  ck.model->load_state(state, path);
  ck.model->eval();
  return ck;
}

}  // namespace tdrop
