#include "models/trainer.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <future>

#include "core/atomic_file.h"
#include "core/json_parse.h"
#include "core/readback.h"
#include "data/datasets.h"
#include "kernels/cross_entropy.h"
#include "kernels/ops.h"
#include "layers/lr_schedule.h"
#include "layers/optimizer.h"
#include "models/checkpoint.h"
#include "models/progress.h"
#include "models/registry.h"
#include "models/resume.h"

namespace tdrop {

namespace {
const nlohmann::json kEmptyObject = nlohmann::json::object();
}  // namespace

nlohmann::json TrainConfig::to_json() const {
  return {{"model", model},         {"model_config", model_config},
          {"dataset", dataset},     {"data_dir", data_dir},
          {"epochs", epochs},       {"batch_size", batch_size},
          {"optimizer", optimizer}, {"lr", lr},
          {"momentum", momentum},   {"weight_decay", weight_decay},
          {"schedule", schedule},   {"warmup_epochs", warmup_epochs},
          {"device", device},       {"seed", seed},
          {"train_limit", train_limit},
          {"td", td_config_to_json(td)},
          {"l1", l1},
          {"save_every", save_every},
          {"augment", augment},
          {"augment_fill", augment_fill},
          {"clip_grad_norm", clip_grad_norm}};
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j, const std::string& source) {
  TrainConfig c;
  // Each value is checked as the CLI checks its option (a hand-edited or damaged config.json
  // must not train 0-step epochs or overflow), and every error names the file.
  auto value = [&](const char* key, const nlohmann::json* fallback) -> const nlohmann::json& {
    if (j.contains(key)) return j[key];
    TDROP_CHECK(fallback != nullptr, source, ": '", key, "' is missing");
    return *fallback;
  };
  auto integer = [&](const char* key, int64_t lo, int64_t hi,
                     const nlohmann::json& fallback = nullptr) -> int64_t {
    const nlohmann::json& v = value(key, fallback.is_null() ? nullptr : &fallback);
    TDROP_CHECK(v.is_number_integer() && v >= lo && v <= hi, source, ": '", key,
                "' must be an integer in [", lo, ", ", hi, "], got ", v.dump());
    return v.get<int64_t>();
  };
  auto number = [&](const char* key, double lo, double hi, bool above_lo,
                    const nlohmann::json& fallback = nullptr) -> double {
    const nlohmann::json& v = value(key, fallback.is_null() ? nullptr : &fallback);
    const bool ok = v.is_number() && (above_lo ? v.get<double>() > lo : v.get<double>() >= lo) &&
                    v.get<double>() <= hi;
    TDROP_CHECK(ok, source, ": '", key, "' must be a number in ", above_lo ? "(" : "[", lo, ", ",
                hi, "], got ", v.dump());
    return v.get<double>();
  };
  auto text = [&](const char* key, const nlohmann::json& fallback = nullptr) -> std::string {
    const nlohmann::json& v = value(key, fallback.is_null() ? nullptr : &fallback);
    TDROP_CHECK(v.is_string(), source, ": '", key, "' must be a string, got ", v.dump());
    return v.get<std::string>();
  };
  try {
    c.model = text("model");
    c.model_config = value("model_config", &kEmptyObject);
    TDROP_CHECK(c.model_config.is_object(), source, ": 'model_config' must be an object, got ",
                c.model_config.type_name());
    c.dataset = text("dataset");
    c.data_dir = text("data_dir", "");
    c.epochs = static_cast<int>(integer("epochs", 1, 100000));
    c.batch_size = integer("batch_size", 1, int64_t{1} << 20);
    c.optimizer = text("optimizer");
    c.lr = static_cast<float>(number("lr", 0.0, 1e3, true));
    c.momentum = static_cast<float>(number("momentum", 0.0, 0.999999, false));
    c.weight_decay = static_cast<float>(number("weight_decay", 0.0, 1.0, false));
    c.schedule = text("schedule");
    c.warmup_epochs = static_cast<int>(integer("warmup_epochs", 0, 100000, 0));
    c.device = text("device", "auto");
    const nlohmann::json& seed = value("seed", nullptr);
    TDROP_CHECK(seed.is_number_unsigned() || (seed.is_number_integer() && seed >= 0), source,
                ": 'seed' must be a non-negative integer, got ", seed.dump());
    c.seed = seed.get<uint64_t>();
    c.train_limit = integer("train_limit", 0, std::numeric_limits<int64_t>::max(), 0);
    c.td = j.contains("td") ? td_config_from_json(j["td"]) : TargetedDropoutConfig{};
    c.td.validate(source + " 'td'");
    c.l1 = static_cast<float>(number("l1", 0.0, 1e3, false, 0.0));
    c.save_every = integer("save_every", 0, std::numeric_limits<int64_t>::max(), 0);
    c.augment = text("augment", "auto");
    c.augment_fill = text("augment_fill", "zero");  // absent: written before black padding
    TDROP_CHECK(c.augment_fill == "black" || c.augment_fill == "zero", source,
                ": 'augment_fill' must be \"black\" or \"zero\", got \"", c.augment_fill, "\"");
    c.clip_grad_norm = static_cast<float>(number("clip_grad_norm", 0.0, 1e6, false, 0.0));
  } catch (const nlohmann::json::exception& e) {
    fail(source, ": not a tdrop run configuration: ", e.what());
  }
  return c;
}

nlohmann::json EpochMetrics::to_json() const {
  return {{"epoch", epoch},
          {"step", step},
          {"lr", lr},
          {"train_loss", train_loss},
          {"train_accuracy", train_accuracy},
          {"test_loss", test_loss},
          {"test_accuracy", test_accuracy},
          {"seconds", seconds},
          {"samples_per_second", samples_per_second},
          {"gpu_wait_seconds", gpu_wait_seconds},
          {"data_wait_seconds", data_wait_seconds},
          {"sparsity_targeted", sparsity_targeted},
          {"sparsity_all", sparsity_all}};
}

namespace {

// Set by SIGINT/SIGTERM; the loop finishes its step, saves and returns.
std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int) { g_stop.store(true); }

// Installs the stop handlers for the life of a training run.
class SignalScope {
 public:
  explicit SignalScope(bool on) : on_(on) {
    if (!on_) return;
    g_stop.store(false);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;  // a second Ctrl-C kills at once
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalScope() {
    if (!on_) return;
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  bool on_;
  struct sigaction old_int_ {}, old_term_ {};
};

// Turns on per-op NaN/Inf checks for the life of a run (--detect-anomaly).
class AnomalyScope {
 public:
  explicit AnomalyScope(bool on) : prev_(anomaly_detection()) { set_anomaly_detection(on || prev_); }
  ~AnomalyScope() { set_anomaly_detection(prev_); }

 private:
  bool prev_;
};

// "parameter '3.weight' (gradient)" for the first non-finite parameter or gradient, or "".
std::string first_nonfinite_tensor(Module& model) {
  for (auto& [name, p] : model.named_parameters()) {
    if (first_nonfinite(p) >= 0) return "parameter '" + name + "'";
    if (p.grad().defined() && first_nonfinite(p.grad()) >= 0)
      return "the gradient of parameter '" + name + "'";
  }
  return "";
}

// Number of predictions equal to their labels.
int64_t count_correct(const std::vector<int64_t>& pred, const std::vector<int64_t>& labels) {
  int64_t c = 0;
  for (size_t i = 0; i < labels.size(); ++i) c += pred[i] == labels[i];
  return c;
}

// A batch's loss, predictions, labels and label verdict (cross_entropy's first bad row), read
// back behind the queued work so the host can look at them a few batches later without
// draining the GPU. Reuses the pinned buffers of `spare` (costly to create).
Readback start_batch_readback(std::vector<Readback>& spare, const Tensor& loss,
                              const Tensor& logits, const Tensor& labels,
                              const Tensor& bad_label_row) {
  Readback rb;
  if (!spare.empty()) {
    rb = std::move(spare.back());
    spare.pop_back();
  }
  rb.start({loss.to(DType::F32), argmax(logits.detach()), labels, bad_label_row});
  return rb;
}

struct BatchTally {
  double loss = 0;
  int64_t correct = 0, count = 0;
};

// Waits for a batch started by start_batch_readback and tallies it. A bad label's row has loss 0
// instead of its loss, so the verdict is looked at first: the CPU's error, followed by where()
// (a callable, so the context is only built for an error).
template <class Where>
BatchTally finish_batch_readback(Readback& rb, const Shape& logits, const Where& where) {
  rb.wait();
  const std::vector<int64_t> y = rb.part<int64_t>(2);
  const int64_t bad_row = rb.part<int64_t>(3)[0];
  if (bad_row >= 0)
    fail(cross_entropy_label_error(y[static_cast<size_t>(bad_row)], bad_row, logits), " (",
         where(), ")");
  return {rb.part<float>(0)[0], count_correct(rb.part<int64_t>(1), y),
          static_cast<int64_t>(y.size())};
}

}  // namespace

// The squares are summed on the gradients' device and read back once: one wait for the GPU per
// step, not one per parameter. They are summed in F64, so entries beyond sqrt(FLT_MAX) do not
// turn the norm into Inf; and the gradients are multiplied by the scale, not updated by
// (scale - 1) * g, which cancels to exactly -g (zero gradients) for scales below ~3e-8.
double clip_grad_norm(Module& model, double max_norm) {
  NoGradGuard no_grad;
  Tensor sq;
  for (Tensor& p : model.parameters()) {
    if (!p.grad().defined()) continue;
    const Tensor g = p.grad().to(DType::F64);
    const Tensor s = sum(mul(g, g));
    sq = sq.defined() ? add(sq, s) : s;
  }
  if (!sq.defined()) return 0.0;
  const double norm = std::sqrt(sq.item());
  if (!(norm > max_norm)) return norm;
  const double scale = max_norm / norm;
  for (Tensor& p : model.parameters()) {
    Tensor g = p.grad();
    if (g.defined()) g.copy_(mul_scalar(g, scale));
  }
  return norm;
}

EvalResult evaluate(Module& model, BatchLoader& loader) {
  NoGradGuard no_grad;
  const bool was_training = model.training();
  model.eval();
  const EvalWeightCache eval_weights(model);
  loader.start_epoch(0);
  EvalResult r;
  double loss_sum = 0;
  int64_t correct = 0;
  // As in training, a batch's loss and predictions are read back behind the queued work and
  // looked at two batches later, so the host never drains the GPU between batches.
  std::deque<std::pair<Shape, Readback>> pending;
  std::vector<Readback> spare;
  auto settle = [&](size_t keep) {
    while (pending.size() > keep) {
      auto& [logits_shape, rb] = pending.front();
      const BatchTally t = finish_batch_readback(rb, logits_shape, [] { return "evaluation"; });
      loss_sum += t.loss * static_cast<double>(t.count);
      correct += t.correct;
      r.count += t.count;
      spare.push_back(std::move(rb));
      pending.pop_front();
    }
  };
  for (int64_t i = 0; i < loader.num_batches(); ++i) {
    Batch b = loader.batch(i);
    Tensor logits = model.forward(b.images);
    Tensor bad_label_row;
    const Tensor loss = cross_entropy(logits, b.labels, &bad_label_row);
    pending.emplace_back(logits.shape(),
                         start_batch_readback(spare, loss, logits, b.labels, bad_label_row));
    settle(2);
  }
  settle(0);
  model.train(was_training);
  r.loss = loss_sum / std::max<int64_t>(r.count, 1);
  r.accuracy = static_cast<double>(correct) / std::max<int64_t>(r.count, 1);
  return r;
}

namespace {
// A fresh run writes config.json at once and its resume point at the first save: into a
// directory that holds another run, that would silently replace the other run's resume point,
// or (killed before its first save) leave a resume file that --resume would continue under the
// new configuration. So such a directory is refused, unless the user asks to replace it; then
// the old run's files go first.
void claim_run_dir(const std::string& dir, bool overwrite) {
  namespace fs = std::filesystem;
  std::error_code ec;
  TDROP_CHECK(!fs::exists(dir, ec) || fs::is_directory(dir, ec), "--out ", dir,
              " exists and is not a directory");
  const std::vector<std::string> files = {"config.json", "resume.safetensors", "model.safetensors",
                                          "metrics.jsonl"};
  std::vector<std::string> found;
  for (const std::string& f : files)
    if (fs::exists(dir + "/" + f, ec)) found.push_back(f);
  if (found.empty()) return;
  TDROP_CHECK(overwrite, "--out ", dir, " already holds a run (", found.front(),
              "); continue it with --resume ", dir, ", or pass --overwrite to replace it");
  for (const std::string& f : found) {
    fs::remove(dir + "/" + f, ec);
    TDROP_CHECK(!ec, "--overwrite: cannot remove ", dir, "/", f, ": ", ec.message());
  }
}
}  // namespace

TrainResult train(const TrainConfig& cfg_in) {
  TrainConfig cfg = cfg_in;
  if (cfg.resume) {
    TDROP_CHECK(!cfg.out_dir.empty(), "--resume needs the run directory");
    const std::string path = cfg.out_dir + "/config.json";
    const nlohmann::json saved = parse_json_bounded(read_file(path), path);
    TrainConfig r = TrainConfig::from_json(saved, path);
    // What may change on resume: the total epochs (where the learning rate does not depend on
    // them), the device, the output and checks. A cosine or step schedule is laid out over the
    // run's epochs: another total would give the steps already trained a different curve.
    if (cfg.epochs > 0 && cfg.epochs != r.epochs)
      TDROP_CHECK(parse_schedule(r.schedule) == LrSchedule::Kind::Constant, "--resume ",
                  cfg.out_dir, ": the run's ", r.schedule, " learning-rate schedule spans its ",
                  r.epochs, " epochs, and --epochs ", cfg.epochs,
                  " would change the rate of the steps already trained; resume with --epochs ",
                  r.epochs, " (or none), or start a new run (a constant schedule can be extended)");
    if (cfg.epochs > 0) r.epochs = cfg.epochs;
    if (!cfg.device.empty()) r.device = cfg.device;
    r.out_dir = cfg.out_dir;
    r.progress = cfg.progress;
    r.print_epochs = cfg.print_epochs;
    r.readback_lag = cfg.readback_lag;
    r.resume = true;
    r.save_every = cfg.save_every ? cfg.save_every : r.save_every;
    r.detect_anomaly = cfg.detect_anomaly;
    r.handle_signals = cfg.handle_signals;
    r.stop_after_step = cfg.stop_after_step;
    cfg = r;
  }
  TDROP_CHECK(cfg.epochs >= 1, "--epochs must be at least 1, got ", cfg.epochs);
  TDROP_CHECK(cfg.batch_size >= 1, "--batch-size must be at least 1, got ", cfg.batch_size);
  TDROP_CHECK(std::isfinite(cfg.lr) && cfg.lr > 0, "--lr must be a positive number, got ", cfg.lr);
  TDROP_CHECK(std::isfinite(cfg.l1) && cfg.l1 >= 0, "--l1 must be >= 0, got ", cfg.l1);
  // NaN passes a range check; it would also be written to config.json as null, which --resume
  // then refuses.
  TDROP_CHECK(std::isfinite(cfg.momentum) && cfg.momentum >= 0 && cfg.momentum < 1,
              "--momentum must be in [0, 1), got ", cfg.momentum);
  TDROP_CHECK(std::isfinite(cfg.weight_decay) && cfg.weight_decay >= 0 && cfg.weight_decay <= 1,
              "--weight-decay must be in [0, 1], got ", cfg.weight_decay);
  TDROP_CHECK(cfg.warmup_epochs >= 0 && cfg.warmup_epochs <= cfg.epochs, "--warmup-epochs (",
              cfg.warmup_epochs, ") must be between 0 and --epochs (", cfg.epochs, ")");
  TDROP_CHECK(cfg.save_every >= 0, "--save-every must be >= 0, got ", cfg.save_every);
  cfg.td.validate("--td");
  const Device device = parse_device(cfg.device);
  const DatasetSpec& spec = find_dataset(cfg.dataset);

  TDROP_CHECK(cfg.augment == "auto" || cfg.augment == "none" || cfg.augment == "crop-flip",
              "--augment must be auto, none or crop-flip, got '", cfg.augment, "'");
  TDROP_CHECK(std::isfinite(cfg.clip_grad_norm) && cfg.clip_grad_norm >= 0,
              "--clip-grad-norm must be >= 0, got ", cfg.clip_grad_norm);
  if (!cfg.resume && !cfg.out_dir.empty()) claim_run_dir(cfg.out_dir, cfg.overwrite);
  if (cfg.resume) require_resume_file(cfg.out_dir);
  const int64_t pad_to = find_model(cfg.model).input_size;
  ImageDataset train_set = load_dataset(cfg.dataset, cfg.data_dir, "train", pad_to);
  ImageDataset test_set = load_dataset(cfg.dataset, cfg.data_dir, "test", pad_to);
  if (cfg.train_limit > 0 && cfg.train_limit < train_set.count) {
    const int64_t per = train_set.channels * train_set.height * train_set.width;
    train_set.count = cfg.train_limit;
    train_set.images.resize(static_cast<size_t>(cfg.train_limit * per));
    train_set.labels.resize(static_cast<size_t>(cfg.train_limit));
  }
  const bool augment =
      cfg.augment == "crop-flip" || (cfg.augment == "auto" && spec.augment_by_default);
  TDROP_CHECK(!augment || cfg.augment_fill == "black", "this run augments with crops padded by 0 "
              "(mid-grey after normalisation), as tdrop did before it padded with black; resuming "
              "it would change its training data mid-run: start it again");
  const AugmentConfig aug = black_padding(spec.mean, spec.std);
  BatchLoader train_loader(train_set, cfg.batch_size, true, cfg.seed, device, spec.mean, spec.std,
                           augment ? &aug : nullptr);
  BatchLoader test_loader(test_set, 1000, false, cfg.seed, device, spec.mean, spec.std);
  const long steps_per_epoch = static_cast<long>(train_loader.num_batches());

  TrainResult result;
  result.device = device;
  result.model_config = cfg.model_config.is_object() ? cfg.model_config : nlohmann::json::object();
  if (!cfg.resume) {
    result.model_config["input_shape"] = {train_set.channels, train_set.height, train_set.width};
    if (!result.model_config.contains("input_features"))
      result.model_config["input_features"] = train_set.channels * train_set.height * train_set.width;
    result.model_config["num_classes"] = train_set.num_classes;
    if (cfg.td.enabled()) {
      TargetedDropoutConfig td = cfg.td;
      if (td.ramp && td.ramp_steps == 0) td.ramp_steps = steps_per_epoch * cfg.epochs;
      result.model_config["td"] = td_config_to_json(td);
    } else {
      result.model_config.erase("td");
    }
  }
  result.model = build_model(cfg.model, result.model_config);
  Module& model = *result.model;
  model.reset_parameters(cfg.seed);
  model.to(device);
  model.train();

  auto opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum,
                            cfg.weight_decay);
  LrSchedule sched;
  sched.kind = parse_schedule(cfg.schedule);
  sched.base_lr = cfg.lr;
  sched.total_steps = steps_per_epoch * cfg.epochs;
  sched.warmup_steps = steps_per_epoch * cfg.warmup_epochs;

  ResumePoint at;
  const bool writing = !cfg.out_dir.empty();
  if (cfg.resume) {
    at = load_resume(cfg.out_dir, model, *opt);
    // The run's own arithmetic: step = (epoch - 1) * batches per epoch + batch, so a damaged
    // position can neither skip nor replay batches unnoticed.
    TDROP_CHECK(at.batch <= steps_per_epoch &&
                    at.step == static_cast<long>(at.epoch - 1) * steps_per_epoch + at.batch &&
                    at.seen <= static_cast<int64_t>(at.batch) * cfg.batch_size,
                resume_path(cfg.out_dir), ": position (epoch ", at.epoch, ", batch ", at.batch,
                ", step ", at.step, ", ", at.seen, " images seen) does not fit this run's ",
                steps_per_epoch, " batches of ", cfg.batch_size, " per epoch");
    TDROP_CHECK(at.epoch <= cfg.epochs, "--resume ", cfg.out_dir, ": the run already finished ",
                at.epoch - 1, " epochs",
                sched.kind == LrSchedule::Kind::Constant
                    ? "; pass --epochs larger than that to train more"
                    : " and its learning-rate schedule");
    std::printf("resuming %s at epoch %d, step %ld\n", cfg.out_dir.c_str(), at.epoch, at.step);
    // The optimizer's rate as the last step left it: an epoch whose steps all ran before the
    // interruption runs none now, and its log line reports this rate.
    if (at.step > 0) opt->set_lr(sched.at(at.step - 1));
  }
  // The run's configuration as config.json holds it and every checkpoint repeats it (resolved
  // model config included, so a fresh and a resumed run write the same).
  nlohmann::json run_config = cfg.to_json();
  run_config["model_config"] = result.model_config;
  run_config["resolved_device"] = device_name(device);
  if (writing) {
    std::error_code ec;
    std::filesystem::create_directories(cfg.out_dir, ec);
    TDROP_CHECK(!ec, "cannot create the run directory ", cfg.out_dir, ": ", ec.message());
    write_file_atomic(cfg.out_dir + "/config.json", run_config.dump(2) + "\n");
  }
  // What a divergence leaves behind, said as it is.
  auto kept_checkpoint_note = [&]() -> std::string {
    if (!writing) return "Nothing was saved (no --out).";
    std::error_code ec;
    if (std::filesystem::exists(resume_path(cfg.out_dir), ec))
      return "The last good checkpoint in " + cfg.out_dir + " is kept.";
    return "No checkpoint was saved in " + cfg.out_dir + " yet (rerun with --overwrite).";
  };
  // Nothing non-finite is ever written: the last good checkpoint survives a divergence.
  auto require_finite = [&](long step) {
    const std::string bad = first_nonfinite_tensor(model);
    TDROP_CHECK(bad.empty(), "training diverged before step ", step, ": ", bad,
                " is not finite. ", kept_checkpoint_note());
  };
  auto save_point = [&](const ResumePoint& p) {
    if (!writing) return;
    require_finite(p.step);
    save_resume(cfg.out_dir, model, *opt, p);
  };

  AnomalyScope anomaly(cfg.detect_anomaly);
  SignalScope signals(cfg.handle_signals);
  // A step's loss and predictions are read back behind the queued work and looked at `lag`
  // steps later, so the host never drains the GPU mid-epoch (on CPU they are looked at at once).
  // A non-finite loss is still reported with the step that produced it; the parameters may have
  // taken up to `lag` more steps by then, but nothing non-finite is ever saved.
  const size_t lag = cfg.detect_anomaly          ? 0
                     : cfg.readback_lag >= 0      ? static_cast<size_t>(cfg.readback_lag)
                     : device == Device::CUDA     ? 2
                                                  : 0;
  struct PendingStep {
    long step;
    int epoch;
    Shape logits;
    Readback values;  // loss [1], predictions [B], labels [B], first bad label row [1]
  };
  std::deque<PendingStep> pending;
  std::vector<Readback> spare;  // reused: pinned memory and events are costly to create
  double gpu_wait = 0, data_wait = 0;  // of the current epoch
  auto seconds_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  auto settle = [&](size_t keep) {
    if (keep == 0) finish_targeted_dropout_checks();
    while (pending.size() > keep) {
      PendingStep& p = pending.front();
      const auto waited = std::chrono::steady_clock::now();
      const BatchTally t = finish_batch_readback(p.values, p.logits, [&] {
        return "training step " + std::to_string(p.step) + ", epoch " + std::to_string(p.epoch);
      });
      gpu_wait += seconds_since(waited);
      if (!std::isfinite(t.loss)) {
        const std::string bad = first_nonfinite_tensor(model);
        fail("training diverged: loss is ", t.loss, " at step ", p.step, " (epoch ", p.epoch, ")",
             bad.empty() ? "; rerun with --detect-anomaly to find the first layer that made it"
                         : "; first non-finite: " + bad,
             "; lower --lr or check the data. ", kept_checkpoint_note());
      }
      at.correct += t.correct;
      at.loss_sum += t.loss * static_cast<double>(t.count);
      at.seen += t.count;
      spare.push_back(std::move(p.values));
      pending.pop_front();
    }
  };
  for (int epoch = at.epoch; epoch <= cfg.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    const double seconds_before = at.seconds;
    gpu_wait = data_wait = 0;
    train_loader.start_epoch(static_cast<uint64_t>(epoch - 1));
    ProgressLine progress(cfg.progress, at.batch);
    // The next batch is gathered (and copied to the device) while this one trains.
    std::future<Batch> next;
    if (at.batch < steps_per_epoch)
      next = std::async(std::launch::async, [&, i = at.batch] { return train_loader.batch(i); });
    for (long i = at.batch; i < steps_per_epoch; ++i) {
      const long step = at.step;
      const auto waited = std::chrono::steady_clock::now();
      Batch b = next.get();
      data_wait += seconds_since(waited);
      if (i + 1 < steps_per_epoch)
        next = std::async(std::launch::async, [&, i] { return train_loader.batch(i + 1); });
      model.set_rng(cfg.seed, static_cast<uint64_t>(step));
      precompute_targeted_dropout(model, cfg.seed, static_cast<uint64_t>(step));
      opt->set_lr(sched.at(step));
      Tensor logits = model.forward(b.images);
      Tensor bad_label_row;  // checked when the step is settled: no wait for the GPU here
      Tensor loss = cross_entropy(logits, b.labels, &bad_label_row);
      pending.push_back({step, epoch, logits.shape(),
                         start_batch_readback(spare, loss, logits, b.labels, bad_label_row)});
      settle(lag);  // with lag 0 a non-finite loss stops here, before any update
      opt->zero_grad();
      loss.backward();
      if (cfg.l1 > 0)
        for (auto& [name, layer] : targetable_layers(model)) {
          Tensor g = layer->weight().grad();
          if (g.defined()) add_l1_subgradient_(g, layer->weight(), cfg.l1);
        }
      if (cfg.clip_grad_norm > 0) clip_grad_norm(model, cfg.clip_grad_norm);
      opt->step();
      at.step = step + 1;
      at.batch = i + 1;
      at.seconds = seconds_before +
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      char extra[160];
      const int64_t done = (i + 1) * cfg.batch_size;  // images/s counts queued steps too
      std::snprintf(extra, sizeof extra, "loss %.4f  acc %5.2f%%  %.0f images/s",
                    at.loss_sum / std::max<int64_t>(at.seen, 1),
                    100.0 * at.correct / std::max<int64_t>(at.seen, 1),
                    static_cast<double>(std::min<int64_t>(done, train_set.count)) /
                        std::max(at.seconds, 1e-9));
      progress.update("epoch " + std::to_string(epoch) + "/" + std::to_string(cfg.epochs) +
                          " step",
                      i + 1, steps_per_epoch, extra);
      const bool stop =
          g_stop.load() || (cfg.stop_after_step > 0 && at.step == cfg.stop_after_step);
      if ((cfg.save_every > 0 && at.step % cfg.save_every == 0) || stop) {
        settle(0);  // a resume point holds every finished step's loss and accuracy
        save_point(at);
      }
      if (stop) {
        progress.finish();
        std::fprintf(stderr,
                     "\ninterrupted at step %ld (epoch %d); saved. Resume with:\n"
                     "  tdrop train --resume %s --epochs %d\n",
                     at.step, epoch, writing ? cfg.out_dir.c_str() : "DIR", cfg.epochs);
        result.interrupted = true;
        return result;
      }
    }
    settle(0);
    at.seconds = seconds_before +
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress.finish();
    EpochMetrics m;
    m.seconds = at.seconds;
    m.epoch = epoch;
    m.step = at.step;
    m.lr = opt->lr();
    m.train_loss = at.loss_sum / std::max<int64_t>(at.seen, 1);
    m.train_accuracy = static_cast<double>(at.correct) / std::max<int64_t>(at.seen, 1);
    m.samples_per_second = at.seen / std::max(m.seconds, 1e-9);
    m.gpu_wait_seconds = gpu_wait;
    m.data_wait_seconds = data_wait;
    const EvalResult ev = evaluate(model, test_loader);
    m.test_loss = ev.loss;
    m.test_accuracy = ev.accuracy;
    const SparsityReport sp = measure_sparsity(model);
    m.sparsity_targeted = sp.targeted();
    m.sparsity_all = sp.all();
    result.epochs.push_back(m);
    if (cfg.print_epochs) {
      std::printf("epoch %2d/%d  loss %.4f  train acc %6.2f%%  test acc %6.2f%%  lr %.4g  %.1f s"
                  "  %.0f images/s  sparsity %.1f%%/%.1f%%\n",
                  epoch, cfg.epochs, m.train_loss, 100 * m.train_accuracy, 100 * m.test_accuracy,
                  m.lr, m.seconds, m.samples_per_second, 100 * m.sparsity_targeted,
                  100 * m.sparsity_all);
      std::fflush(stdout);
    }
    at.metrics_jsonl += m.to_json().dump() + "\n";
    at.epoch = epoch + 1;
    at.batch = 0;
    at.loss_sum = 0;
    at.correct = at.seen = 0;
    at.seconds = 0;
    // Each write is atomic, and the resume point goes last: a kill between two writes replays
    // this epoch, which writes the same files again (with the resume point first, a kill after
    // the last epoch's would leave a finished run without its model).
    if (writing) {
      require_finite(at.step);
      write_file_atomic(cfg.out_dir + "/metrics.jsonl", at.metrics_jsonl);
      save_checkpoint(cfg.out_dir + "/model.safetensors", model, cfg.model, result.model_config,
                      {{"epoch", std::to_string(epoch)},
                       {"test_accuracy", std::to_string(m.test_accuracy)},
                       {"train_config", run_config.dump()}});
      save_point(at);
    }
  }
  model.eval();
  return result;
}

}  // namespace tdrop
