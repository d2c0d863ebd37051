#include "models/resume.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <type_traits>

#include "core/json_parse.h"
#include "core/safetensors.h"
#include "models/checkpoint.h"

namespace tdrop {

namespace {
template <class T>
T meta(const std::map<std::string, std::string>& m, const std::string& key,
       const std::string& source) {
  auto it = m.find(key);
  TDROP_CHECK(it != m.end(), source, ": resume metadata '", key, "' is missing");
  const std::string what = source + ": resume metadata '" + key + "'";
  const nlohmann::json v = parse_json_bounded(it->second, what);  // the file may be hostile
  try {
    // A count must be written as an integer ("1.7" is no epoch) that fits T.
    if constexpr (std::is_integral_v<T>)
      TDROP_CHECK(v.is_number_integer() && v >= std::numeric_limits<T>::min() &&
                      v <= std::numeric_limits<T>::max(),
                  what, " is not an integer count: ", it->second);
    return v.get<T>();
  } catch (const nlohmann::json::exception& e) {
    fail(what, " is malformed: ", e.what());
  }
}
}  // namespace

std::string resume_path(const std::string& run_dir) { return run_dir + "/resume.safetensors"; }

void require_resume_file(const std::string& run_dir) {
  const std::string path = resume_path(run_dir);
  TDROP_CHECK(std::filesystem::exists(path), "--resume ", run_dir, ": ", path,
              " not found (was the run started with this tdrop, and did it save?)");
}

void save_resume(const std::string& run_dir, const Module& model, const Optimizer& opt,
                 const ResumePoint& at) {
  SafetensorsFile f;
  for (auto& [name, t] : model.named_parameters()) f.tensors["model/" + name] = to_raw_tensor(t);
  for (auto& [name, t] : model.named_buffers()) f.tensors["model/" + name] = to_raw_tensor(t);
  for (auto& [name, t] : opt.state()) f.tensors["optim/" + name] = to_raw_tensor(t);
  f.metadata = {{"format", "tdrop-resume"},
                {"epoch", std::to_string(at.epoch)},
                {"batch", std::to_string(at.batch)},
                {"step", std::to_string(at.step)},
                {"optimizer_steps", std::to_string(opt.steps_taken())},
                {"loss_sum", nlohmann::json(at.loss_sum).dump()},
                {"correct", std::to_string(at.correct)},
                {"seen", std::to_string(at.seen)},
                {"seconds", nlohmann::json(at.seconds).dump()},
                {"metrics_jsonl", nlohmann::json(at.metrics_jsonl).dump()}};
  save_safetensors(resume_path(run_dir), f);
}

ResumePoint load_resume(const std::string& run_dir, Module& model, Optimizer& opt) {
  const std::string path = resume_path(run_dir);
  require_resume_file(run_dir);
  SafetensorsFile f = load_safetensors(path);
  auto fmt = f.metadata.find("format");
  TDROP_CHECK(fmt != f.metadata.end() && fmt->second == "tdrop-resume", path,
              ": not a tdrop resume file");
  std::map<std::string, Tensor> model_state, optim_state;
  for (auto& [name, r] : f.tensors) {
    if (name.rfind("model/", 0) == 0) model_state[name.substr(6)] = f32_tensor_from_raw(r, name, path);
    else if (name.rfind("optim/", 0) == 0) optim_state[name.substr(6)] = f32_tensor_from_raw(r, name, path);
    else fail(path, ": unexpected tensor '", printable(name), "'");
  }
  model.load_state(model_state, path);
  check_state_finite(model_state, path);  // the trainer never saves a NaN: a damaged file
  check_state_finite(optim_state, path);
  ResumePoint at;
  at.epoch = meta<int>(f.metadata, "epoch", path);
  at.batch = meta<long>(f.metadata, "batch", path);
  at.step = meta<long>(f.metadata, "step", path);
  at.loss_sum = meta<double>(f.metadata, "loss_sum", path);
  at.correct = meta<int64_t>(f.metadata, "correct", path);
  at.seen = meta<int64_t>(f.metadata, "seen", path);
  at.seconds = meta<double>(f.metadata, "seconds", path);
  at.metrics_jsonl = meta<std::string>(f.metadata, "metrics_jsonl", path);
  TDROP_CHECK(at.epoch >= 1 && at.batch >= 0 && at.step >= 0 && at.seen >= 0 && at.correct >= 0 &&
                  at.correct <= at.seen && std::isfinite(at.loss_sum) && std::isfinite(at.seconds),
              path, ": inconsistent position (epoch ", at.epoch, ", batch ", at.batch, ", step ",
              at.step, ", ", at.correct, " of ", at.seen, " correct)");
  // One optimizer step per training step: a count beyond that (or below 0) would misplace
  // Adam's bias correction.
  const int64_t optimizer_steps = meta<int64_t>(f.metadata, "optimizer_steps", path);
  TDROP_CHECK(optimizer_steps >= 0 && optimizer_steps <= at.step, path, ": optimizer steps ",
              optimizer_steps, " do not fit step ", at.step);
  opt.load_state(optim_state, optimizer_steps, path);
  return at;
}

}  // namespace tdrop
