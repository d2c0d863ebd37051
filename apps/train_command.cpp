#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "apps/blas_kernels.h"
#include "apps/commands.h"
#include "apps/plot.h"
#include "core/device.h"
#include "kernels/conv2d.h"
#include "layers/targeted.h"
#include "models/registry.h"
#include "models/trainer.h"

namespace tdrop {

namespace {
struct TdOptions {
  std::string mode = "none", dropout;
  double gamma = 0.5;
  float alpha = 0.5f, dropout_rate = 0.0f;
  bool ramp = false, per_weight = false, keep_all = false;
  int64_t ramp_steps = 0;

  // Options that only act together with another: an inert one is an error, not ignored.
  void check_combinations(const CLI::App& group) const {
    auto given = [&](const char* name) { return group.get_option(name)->count() > 0; };
    if (mode == "none")
      for (const char* name : {"--td-gamma", "--td-alpha", "--td-ramp", "--td-ramp-steps",
                               "--td-unit-per-weight", "--td-eval-keep-all"})
        TDROP_CHECK(!given(name), name, " needs --td weight|unit (targeted dropout is off)");
    TDROP_CHECK(!given("--td-ramp-steps") || ramp, "--td-ramp-steps needs --td-ramp");
    TDROP_CHECK(!given("--td-unit-per-weight") || mode == "unit",
                "--td-unit-per-weight needs --td unit");
    TDROP_CHECK(dropout.empty() == !given("--dropout-rate"),
                dropout.empty() ? "--dropout-rate needs --dropout weight|unit"
                                : "--dropout needs --dropout-rate P");
  }

  TargetedDropoutConfig resolve() const {
    TargetedDropoutConfig c;
    if (!dropout.empty()) {
      TDROP_CHECK(mode == "none", "--dropout and --td are alternatives; pass one of them");
      c.mode = parse_td_mode(dropout);
      c.gamma = 1.0;  // every weight (or unit) is a candidate
      c.alpha = dropout_rate;
      c.rescale = true;
      c.keep_all_in_eval = true;
      return c;
    }
    c.mode = parse_td_mode(mode);
    c.gamma = gamma;
    c.alpha = alpha;
    c.ramp = ramp;
    c.ramp_steps = ramp_steps;
    c.unit_per_weight_draws = per_weight;
    c.keep_all_in_eval = keep_all;
    return c;
  }
};
bool resumable_option(const std::string& name) {
  for (const char* ok : {"--resume", "--epochs", "--device", "--save-every", "--plot", "--td-impl",
                         "--cudnn-nondeterministic", "--no-progress", "--detect-anomaly", "--help"})
    if (name == ok) return true;
  return false;
}

// Draws the training curves of the run in out_dir from its metrics.jsonl (every epoch, those
// of earlier sessions of a resumed run included).
void plot_run(const std::string& png, const std::string& out_dir, const std::string& title) {
  const std::string path = out_dir + "/metrics.jsonl";
  std::ifstream f(path);
  TDROP_CHECK(f, "train --plot: cannot read ", path);
  std::vector<nlohmann::json> epochs;
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    if (line.empty()) continue;
    try {
      epochs.push_back(nlohmann::json::parse(line));
    } catch (const nlohmann::json::exception& e) {
      fail("train --plot: ", path, " line ", n, " is not JSON: ", e.what());
    }
  }
  plot_training_curves(png, title, epochs);
  std::printf("plot written to %s\n", png.c_str());
}
}  // namespace

void add_train_command(CLI::App& app) {
  auto cfg = std::make_shared<TrainConfig>();
  auto* cmd = app.add_subcommand("train", "train a model from the zoo");
  cmd->add_option("--model", cfg->model, "model name (see `tdrop inspect --list`)")
      ->check(CLI::IsMember(model_names()))
      ->capture_default_str();
  add_dataset_options(cmd, cfg->dataset, cfg->data_dir);
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
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            const double lr = std::strtod(v.c_str(), nullptr);
            return lr > 0 && lr <= 1e3 ? "" : "must be > 0 and at most 1000, got " + v;
          },
          "in (0, 1000]"))
      ->capture_default_str();
  cmd->add_option("--momentum", cfg->momentum, "SGD momentum")
      ->check(CLI::Range(0.0, 0.999999))
      ->capture_default_str();
  cmd->add_option("--weight-decay", cfg->weight_decay, "L2 weight decay on every parameter, biases and norms included, as He et al. "
                  "(decoupled for adamw)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--schedule", cfg->schedule, "constant|step|cosine")
      ->check(CLI::IsMember({"constant", "step", "cosine"}))
      ->capture_default_str();
  cmd->add_option("--warmup-epochs", cfg->warmup_epochs, "linear LR warm-up epochs")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  add_device_option(cmd, cfg->device);
  cmd->add_option("--seed", cfg->seed, "random seed (initialisation, shuffling, dropout)")
      ->check(whole_number<uint64_t>())
      ->capture_default_str();
  cmd->add_option("--out", cfg->out_dir,
                  "run directory (default runs/MODEL): config.json, metrics.jsonl, "
                  "model.safetensors, resume.safetensors")
      ->capture_default_str();
  cmd->add_option("--train-limit", cfg->train_limit,
                  "use only the first N training images (0 = all)")
      ->check(whole_number<int64_t>());
  cmd->add_flag("!--no-progress", cfg->progress, "no live progress line");
  cmd->add_flag("--overwrite", cfg->overwrite,
                "replace the run already in --out (without it, such a directory is an error)");
  auto plot = std::make_shared<std::string>();
  cmd->add_option("--plot", *plot,
                  "after training, draw loss, accuracy and sparsity per epoch into this PNG");
  auto nondeterministic = std::make_shared<bool>(false);
  cmd->add_flag("--cudnn-nondeterministic", *nondeterministic,
                "CUDA: let cuDNN use convolution algorithms that add with atomics, as PyTorch "
                "does by default (may be faster; the last bits then differ run to run)");
  auto resume_dir = std::make_shared<std::string>();
  cmd->add_option("--resume", *resume_dir,
                  "continue the run in DIR from its last save (--epochs, the total, may grow only under a "
                  "constant schedule)");
  cmd->add_option("--save-every", cfg->save_every, "also save a resume point every N steps")
      ->check(whole_number<int64_t>());
  cmd->add_option("--augment", cfg->augment,
                  "auto (crop+flip for cifar10, none for fashion-mnist) | none | crop-flip (a random crop of the image padded by 4 black pixels, and a horizontal flip)")
      ->check(CLI::IsMember({"auto", "none", "crop-flip"}))
      ->capture_default_str();
  cmd->add_option("--clip-grad-norm", cfg->clip_grad_norm,
                  "rescale gradients whose global L2 norm exceeds this (0: off)")
      ->check(CLI::Range(0.0, 1e6));
  cmd->add_flag("--detect-anomaly", cfg->detect_anomaly,
                "check every op's output and gradient for NaN/Inf (slow, for debugging)");
  // Targeted dropout and the paper's baselines.
  auto td = std::make_shared<TdOptions>();
  auto* g = cmd->add_option_group("targeted dropout", "Gomez et al. 2019 and its baselines");
  g->add_option("--td", td->mode, "targeted dropout: none|weight|unit")
      ->check(CLI::IsMember({"none", "weight", "unit"}))
      ->capture_default_str();
  g->add_option("--td-gamma", td->gamma, "targeted fraction gamma in [0, 1]")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  g->add_option("--td-alpha", td->alpha, "drop probability alpha in [0, 1]")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  g->add_flag("--td-ramp", td->ramp, "ramp gamma and alpha up during training");
  g->add_option("--td-ramp-steps", td->ramp_steps,
                "ramp length T in steps (default: the whole run; a --resume keeps the T it started "
                "with, so a longer resumed run holds gamma and alpha at their targets)")
      ->check(whole_number<int64_t>());
  g->add_flag("--td-unit-per-weight", td->per_weight,
              "unit mode: one draw per weight of a targeted row (the reference code)");
  g->add_flag("--td-eval-keep-all", td->keep_all,
              "eval: keep every weight instead of removing the targeted set");
  g->add_option("--dropout", td->dropout, "untargeted dropout baseline: weight|unit")
      ->check(CLI::IsMember({"weight", "unit"}));
  g->add_option("--dropout-rate", td->dropout_rate, "rate of --dropout (kept weights x 1/(1-p))")
      ->check(CLI::Range(0.0, 0.999));
  auto impl = std::make_shared<std::string>("fused");
  g->add_option("--td-impl", *impl,
                "CUDA kernels: fused (one grouped launch) | unfused (CUB sort pipeline)")
      ->check(CLI::IsMember({"fused", "unfused"}))
      ->capture_default_str();
  g->add_option("--l1", cfg->l1, "L1 penalty L * sum|w| over targetable weights (the reference code's takes the mean "
                "per layer: its L is a layer's size times larger)")->check(CLI::Range(0.0, 1e3));
  cmd->callback([cfg, td, impl, nondeterministic, resume_dir, plot, cmd, g] {
    if (resume_dir->empty()) td->check_combinations(*g);
    cfg->td = td->resolve();
    set_td_cuda_impl(*impl == "unfused" ? TdCudaImpl::Unfused : TdCudaImpl::Fused);
    set_conv2d_nondeterministic(*nondeterministic);
    if (!resume_dir->empty()) {
      // A resumed run continues with its own configuration (config.json); an option that would
      // change it is an error, not silently ignored.
      std::string fixed;
      for (const CLI::App* a : {static_cast<const CLI::App*>(cmd), static_cast<const CLI::App*>(g)})
        for (const CLI::Option* o : a->get_options())
          if (o->count() > 0 && !resumable_option(o->get_name()))
            fixed += (fixed.empty() ? "" : ", ") + o->get_name();
      TDROP_CHECK(fixed.empty(), "--resume continues ", *resume_dir,
                  " with the configuration it was started with; drop ", fixed,
                  " (what may change: --epochs, --device, --save-every, --plot, --td-impl, "
                  "--cudnn-nondeterministic, --no-progress, --detect-anomaly)");
      cfg->resume = true;
      cfg->out_dir = *resume_dir;
      if (cmd->count("--epochs") == 0) cfg->epochs = 0;  // keep the run's own total
      if (cmd->count("--device") == 0) cfg->device = "";   // keep the run's own device
    }
    if (cfg->out_dir.empty()) cfg->out_dir = "runs/" + cfg->model;
    if (cfg->resume) {
      TrainResult r = train(*cfg);
      if (r.interrupted) std::exit(130);
      if (!r.epochs.empty())
        std::printf("final test accuracy %.2f%%  (checkpoint %s/model.safetensors)\n",
                    100 * r.epochs.back().test_accuracy, cfg->out_dir.c_str());
      if (!plot->empty()) plot_run(*plot, cfg->out_dir, "run " + cfg->out_dir);
      return;
    }
    const Device d = parse_device(cfg->device);
    // "(auto, OpenBLAS Haswell, 2 threads)": how the device was chosen and, on the CPU, what
    // its matrix products run on (the numbers of a seed depend on both).
    std::string how = cfg->device == "auto" ? "auto" : "";
    if (d == Device::CPU) how += (how.empty() ? "" : ", ") + blas_description();
    if (!how.empty()) how = " (" + how + ")";
    std::printf("tdrop train: model %s on %s, device %s%s, %d epochs, batch %lld, %s lr %g (%s)%s%s\n",
                cfg->model.c_str(), cfg->dataset.c_str(), device_name(d),
                how.c_str(), cfg->epochs,
                static_cast<long long>(cfg->batch_size), cfg->optimizer.c_str(), cfg->lr,
                cfg->schedule.c_str(), cfg->td.enabled() ? ", " : "",
                cfg->td.describe().c_str());
    std::fflush(stdout);
    TrainResult r = train(*cfg);
    if (r.interrupted) std::exit(130);
    if (r.epochs.empty()) return;
    const EpochMetrics& last = r.epochs.back();
    std::printf("final test accuracy %.2f%%, sparsity %.1f%% of targeted weights, %.1f%% of all"
                "  (checkpoint %s/model.safetensors)\n",
                100 * last.test_accuracy, 100 * last.sparsity_targeted, 100 * last.sparsity_all,
                cfg->out_dir.c_str());
    if (!plot->empty())
      plot_run(*plot, cfg->out_dir,
               cfg->model + " on " + cfg->dataset +
                   (cfg->td.enabled() ? ", " + cfg->td.describe() : std::string()));
  });
}

}  // namespace tdrop
