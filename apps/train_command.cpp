#include <cstdio>
#include <memory>

#include "apps/commands.h"
#include "core/device.h"
#include "models/registry.h"
#include "models/trainer.h"

namespace tdrop {

void add_train_command(CLI::App& app) {
  auto cfg = std::make_shared<TrainConfig>();
  auto* cmd = app.add_subcommand("train", "train a model from the zoo");
  cmd->add_option("--model", cfg->model, "model name (see `tdrop inspect --list`)")
      ->check(CLI::IsMember(model_names()))
      ->capture_default_str();
  cmd->add_option("--dataset", cfg->dataset, "dataset")
      ->check(CLI::IsMember({"fashion-mnist"}))
      ->capture_default_str();
  cmd->add_option("--data-dir", cfg->data_dir,
                  "directory with the dataset files (default: where the Debian package puts them)");
  cmd->add_option("--epochs", cfg->epochs, "training epochs")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  cmd->add_option("--batch-size", cfg->batch_size, "batch size")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->add_option("--optimizer", cfg->optimizer, "sgd|nesterov|adam|adamw")
      ->check(CLI::IsMember({"sgd", "nesterov", "adam", "adamw"}))
      ->capture_default_str();
  cmd->add_option("--lr", cfg->lr, "peak learning rate")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--momentum", cfg->momentum, "SGD momentum")
      ->check(CLI::Range(0.0, 0.999999))
      ->capture_default_str();
  cmd->add_option("--weight-decay", cfg->weight_decay, "L2 weight decay (decoupled for adamw)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--schedule", cfg->schedule, "constant|step|cosine")
      ->check(CLI::IsMember({"constant", "step", "cosine"}))
      ->capture_default_str();
  cmd->add_option("--warmup-epochs", cfg->warmup_epochs, "linear LR warm-up epochs")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  cmd->add_option("--device", cfg->device, "auto|cpu|cuda (auto: CUDA when a GPU is present)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--seed", cfg->seed, "random seed (initialisation, shuffling, dropout)")
      ->capture_default_str();
  cmd->add_option("--out", cfg->out_dir,
                  "run directory: config.json, metrics.jsonl, model.safetensors")
      ->capture_default_str();
  cmd->add_option("--train-limit", cfg->train_limit,
                  "use only the first N training images (0 = all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("!--no-progress", cfg->progress, "no live progress line");
  cmd->callback([cfg] {
    if (cfg->out_dir.empty()) cfg->out_dir = "runs/" + cfg->model;
    const Device d = parse_device(cfg->device);
    std::printf("tdrop train: model %s on %s, device %s%s, %d epochs, batch %lld, %s lr %g (%s)\n",
                cfg->model.c_str(), cfg->dataset.c_str(), device_name(d),
                cfg->device == "auto" ? " (auto)" : "", cfg->epochs,
                static_cast<long long>(cfg->batch_size), cfg->optimizer.c_str(), cfg->lr,
                cfg->schedule.c_str());
    std::fflush(stdout);
    TrainResult r = train(*cfg);
    const EpochMetrics& last = r.epochs.back();
    std::printf("final test accuracy %.2f%%  (checkpoint %s/model.safetensors)\n",
                100 * last.test_accuracy, cfg->out_dir.c_str());
  });
}

}  // namespace tdrop
