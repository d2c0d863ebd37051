#include "models/checkpoint.h"

#include "core/json_parse.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "models/registry.h"

namespace tdrop {
namespace {

// A valid model config nests a few levels ({"td": {...}, "hidden": [...]}); deeper JSON is
// refused while parsing, before code that prints or walks it recursively can overflow the stack.
constexpr size_t kMaxConfigDepth = 16;


bool has_control(const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7F) return true;
  return false;
}

// Flat index i of a row-major tensor of `shape` as "[r, c]".
std::string index_str(int64_t i, const Shape& shape) {
  Shape at(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    at[d] = i % shape[d];
    i /= shape[d];
  }
  return shape_str(at);
}

}  // namespace

// A NaN or Inf weight is a corrupt file, not a model: evaluated, it gives an accuracy that means
// nothing (NaN logits argmax to some class) and exit status 0.
void check_state_finite(const std::map<std::string, Tensor>& state, const std::string& path) {
  for (const auto& [name, t] : state) {
    const int64_t i = first_nonfinite(t);
    TDROP_CHECK(i < 0, path, ": tensor '", printable(name), "' ", shape_str(t.shape()),
                " holds a non-finite value (", t.data<float>()[i], ") at index ",
                index_str(i, t.shape()));
  }
}

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
  ck.model_config =
      parse_json_bounded(cit->second, path + ": model config in __metadata__", kMaxConfigDepth);
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
  check_state_finite(state, path);  // after load_state, which names a tensor of the wrong model first
  ck.model->eval();
  return ck;
}

void check_checkpoint_fits(const Checkpoint& ck, const std::string& path, const ImageDataset& data,
                           const std::string& dataset) {
  const nlohmann::json& c = ck.model_config;
  const std::vector<int64_t> have = {data.channels, data.height, data.width};
  if (c.contains("input_shape") && c["input_shape"].is_array()) {
    const std::vector<int64_t> want = c["input_shape"].get<std::vector<int64_t>>();
    TDROP_CHECK(want == have, path, " was trained on inputs ", shape_str(want), ", but ", dataset,
                " gives ", shape_str(have), "; evaluate it on the dataset it was trained on");
  }
  if (c.contains("num_classes") && c["num_classes"].is_number_integer())
    TDROP_CHECK(c["num_classes"].get<int64_t>() == data.num_classes, path, " has ",
                c["num_classes"].get<int64_t>(), " classes, but ", dataset, " has ",
                data.num_classes);
}

}  // namespace tdrop
