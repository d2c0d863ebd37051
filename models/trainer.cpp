#include "models/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/atomic_file.h"
#include "data/datasets.h"
#include "kernels/ops.h"
#include "layers/lr_schedule.h"
#include "layers/optimizer.h"
#include "models/checkpoint.h"
#include "models/progress.h"
#include "models/registry.h"

namespace tdrop {

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
          {"l1", l1}};
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
          {"sparsity_targeted", sparsity_targeted},
          {"sparsity_all", sparsity_all}};
}

namespace {

// Number of correct predictions in a batch (argmax on the device, compared on the host).
int64_t count_correct(const Tensor& logits, const Tensor& labels) {
  const std::vector<int64_t> pred = argmax(logits.detach()).to_vector<int64_t>();
  const std::vector<int64_t> y = labels.to_vector<int64_t>();
  int64_t c = 0;
  for (size_t i = 0; i < y.size(); ++i) c += pred[i] == y[i];
  return c;
}

}  // namespace

EvalResult evaluate(Module& model, BatchLoader& loader) {
  NoGradGuard no_grad;
  const bool was_training = model.training();
  model.eval();
  loader.start_epoch(0);
  EvalResult r;
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t i = 0; i < loader.num_batches(); ++i) {
    Batch b = loader.batch(i);
    Tensor logits = model.forward(b.images);
    loss_sum += cross_entropy(logits, b.labels).item() * static_cast<double>(b.labels.numel());
    correct += count_correct(logits, b.labels);
    r.count += b.labels.numel();
  }
  model.train(was_training);
  r.loss = loss_sum / std::max<int64_t>(r.count, 1);
  r.accuracy = static_cast<double>(correct) / std::max<int64_t>(r.count, 1);
  return r;
}

TrainResult train(const TrainConfig& cfg) {
  TDROP_CHECK(cfg.epochs >= 1, "--epochs must be at least 1, got ", cfg.epochs);
  TDROP_CHECK(cfg.batch_size >= 1, "--batch-size must be at least 1, got ", cfg.batch_size);
  TDROP_CHECK(std::isfinite(cfg.lr) && cfg.lr > 0, "--lr must be a positive number, got ", cfg.lr);
  TDROP_CHECK(std::isfinite(cfg.l1) && cfg.l1 >= 0, "--l1 must be >= 0, got ", cfg.l1);
  cfg.td.validate("--td");
  const Device device = parse_device(cfg.device);
  const DatasetSpec& spec = find_dataset(cfg.dataset);

  ImageDataset train_set = load_dataset(cfg.dataset, cfg.data_dir, "train");
  ImageDataset test_set = load_dataset(cfg.dataset, cfg.data_dir, "test");
  if (cfg.train_limit > 0 && cfg.train_limit < train_set.count) {
    const int64_t per = train_set.channels * train_set.height * train_set.width;
    train_set.count = cfg.train_limit;
    train_set.images.resize(static_cast<size_t>(cfg.train_limit * per));
    train_set.labels.resize(static_cast<size_t>(cfg.train_limit));
  }
  BatchLoader train_loader(train_set, cfg.batch_size, true, cfg.seed, device, spec.mean, spec.std);
  BatchLoader test_loader(test_set, 1000, false, cfg.seed, device, spec.mean, spec.std);

  TrainResult result;
  result.device = device;
  result.model_config = cfg.model_config.is_object() ? cfg.model_config : nlohmann::json::object();
  result.model_config["input_shape"] = {train_set.channels, train_set.height, train_set.width};
  if (!result.model_config.contains("input_features"))
    result.model_config["input_features"] = train_set.channels * train_set.height * train_set.width;
  result.model_config["num_classes"] = train_set.num_classes;
  const long steps_per_epoch = static_cast<long>(train_loader.num_batches());
  if (cfg.td.enabled()) {
    TargetedDropoutConfig td = cfg.td;
    if (td.ramp && td.ramp_steps == 0) td.ramp_steps = steps_per_epoch * cfg.epochs;
    result.model_config["td"] = td_config_to_json(td);
  } else {
    result.model_config.erase("td");
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

  std::string jsonl;
  if (!cfg.out_dir.empty()) {
    std::filesystem::create_directories(cfg.out_dir);
    nlohmann::json c = cfg.to_json();
    c["model_config"] = result.model_config;
    c["resolved_device"] = device_name(device);
    write_file_atomic(cfg.out_dir + "/config.json", c.dump(2) + "\n");
  }

  long step = 0;
  for (int epoch = 1; epoch <= cfg.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    train_loader.start_epoch(static_cast<uint64_t>(epoch - 1));
    ProgressLine progress(cfg.progress);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    for (long i = 0; i < steps_per_epoch; ++i, ++step) {
      Batch b = train_loader.batch(i);
      model.set_rng(cfg.seed, static_cast<uint64_t>(step));
      precompute_targeted_dropout(model, cfg.seed, static_cast<uint64_t>(step));
      opt->set_lr(sched.at(step));
      Tensor logits = model.forward(b.images);
      Tensor loss = cross_entropy(logits, b.labels);
      const double l = loss.item();
      TDROP_CHECK(std::isfinite(l), "training diverged: loss is ", l, " at step ", step,
                  " (epoch ", epoch, "); lower --lr or check the data");
      opt->zero_grad();
      loss.backward();
      if (cfg.l1 > 0)
        for (auto& [name, layer] : targetable_layers(model)) {
          Tensor g = layer->weight().grad();
          if (g.defined()) add_l1_subgradient_(g, layer->weight(), cfg.l1);
        }
      opt->step();
      loss_sum += l * static_cast<double>(b.labels.numel());
      correct += count_correct(logits, b.labels);
      seen += b.labels.numel();
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      char extra[160];
      std::snprintf(extra, sizeof extra, "loss %.4f  acc %5.2f%%  %.0f samples/s",
                    loss_sum / seen, 100.0 * correct / seen, seen / std::max(secs, 1e-9));
      progress.update("epoch " + std::to_string(epoch) + "/" + std::to_string(cfg.epochs) +
                          " step",
                      i + 1, steps_per_epoch, extra);
    }
    progress.finish();
    EpochMetrics m;
    m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    m.epoch = epoch;
    m.step = step;
    m.lr = opt->lr();
    m.train_loss = loss_sum / std::max<int64_t>(seen, 1);
    m.train_accuracy = static_cast<double>(correct) / std::max<int64_t>(seen, 1);
    m.samples_per_second = seen / std::max(m.seconds, 1e-9);
    const EvalResult ev = evaluate(model, test_loader);
    m.test_loss = ev.loss;
    m.test_accuracy = ev.accuracy;
    const SparsityReport sp = measure_sparsity(model);
    m.sparsity_targeted = sp.targeted();
    m.sparsity_all = sp.all();
    result.epochs.push_back(m);
    if (cfg.print_epochs) {
      std::printf("epoch %2d/%d  loss %.4f  train acc %6.2f%%  test acc %6.2f%%  lr %.4g  %.1f s"
                  "  %.0f samples/s  sparsity %.1f%%/%.1f%%\n",
                  epoch, cfg.epochs, m.train_loss, 100 * m.train_accuracy, 100 * m.test_accuracy,
                  m.lr, m.seconds, m.samples_per_second, 100 * m.sparsity_targeted,
                  100 * m.sparsity_all);
      std::fflush(stdout);
    }
    if (!cfg.out_dir.empty()) {
      jsonl += m.to_json().dump() + "\n";
      write_file_atomic(cfg.out_dir + "/metrics.jsonl", jsonl);
      save_checkpoint(cfg.out_dir + "/model.safetensors", model, cfg.model, result.model_config,
                      {{"epoch", std::to_string(epoch)},
                       {"test_accuracy", std::to_string(m.test_accuracy)},
                       {"train_config", cfg.to_json().dump()}});
    }
  }
  model.eval();
  return result;
}

}  // namespace tdrop
