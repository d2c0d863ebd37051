#include "models/checkpoint.h"

#include <cstring>

#include "core/safetensors.h"
#include "models/registry.h"

namespace tdrop {
namespace {

// A valid model config nests a few levels ({"td": {...}, "hidden": [...]}); deeper JSON is
// refused while parsing, before code that prints or walks it recursively can overflow the stack.
constexpr int kMaxConfigDepth = 16;

// Names in a checkpoint come from the file: escape control bytes so every error stays one line.
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s.substr(0, 200)) {
    if (c < 0x20 || c == 0x7F) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return s.size() > 200 ? out + "..." : out;
}

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
