// The training loop behind `tdrop train`: build a model from the zoo, train it on a dataset with
// an optimizer and LR schedule, evaluate after each epoch, and write config.json, metrics.jsonl
// and model.safetensors into the run directory (each write atomic).
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/loader.h"
#include "layers/module.h"
#include "layers/targeted.h"

namespace tdrop {

struct TrainConfig {
  std::string model = "mlp";
  nlohmann::json model_config = nlohmann::json::object();
  std::string dataset = "fashion-mnist";
  std::string data_dir;  // empty: the dataset's default directory
  int epochs = 10;
  int64_t batch_size = 128;
  std::string optimizer = "sgd";
  float lr = 0.05f, momentum = 0.9f, weight_decay = 5e-4f;
  std::string schedule = "cosine";
  int warmup_epochs = 0;
  std::string device = "auto";
  uint64_t seed = 1;
  std::string out_dir;        // empty: write nothing
  bool progress = true;       // live progress line on stderr
  bool print_epochs = true;   // one summary line per epoch on stdout
  int64_t train_limit = 0;    // use only the first N training images (0 = all); for quick tests
  // Targeted dropout on every targetable layer (or an untargeted dropout baseline, rescale on).
  // A ramp with ramp_steps 0 ramps over the whole run.
  TargetedDropoutConfig td;
  float l1 = 0.0f;  // L1 penalty on targetable weights (a baseline of the paper)
  std::string augment = "auto";  // auto (the dataset's recipe) | none | crop-flip
  // The crop's padding: "black" (-mean/std per channel). Runs configured before it existed
  // padded with "zero" (mid-grey after normalisation); resuming one of those with augmentation
  // would change its data mid-run, so that is refused.
  std::string augment_fill = "black";
  float clip_grad_norm = 0.0f;   // rescale gradients to this global L2 norm when above (0: off)
  // Reliability.
  bool resume = false;        // continue the run in out_dir from its resume.safetensors
  bool overwrite = false;     // a fresh run may replace the run already in out_dir
  int64_t save_every = 0;     // also save the resume file every N steps (0: at epoch ends only)
  bool detect_anomaly = false;  // check every op's output for NaN/Inf (slow)
  bool handle_signals = true;   // SIGINT/SIGTERM: finish the step, save, exit
  // Stop after this global step as SIGINT would (save, report interrupted); 0: never. Not saved
  // with the run; lets tests interrupt at an exact step.
  long stop_after_step = 0;
  // Steps between computing a loss and looking at it on the host (-1: 2 on CUDA, where it keeps
  // the GPU busy, 0 on CPU). Not saved with the run; settable so tests can check both paths.
  int readback_lag = -1;

  nlohmann::json to_json() const;
  // Inverse of to_json (for --resume: the run's config.json); throws naming `source`.
  static TrainConfig from_json(const nlohmann::json& j, const std::string& source);
};

struct EpochMetrics {
  int epoch = 0;
  long step = 0;
  double lr = 0, train_loss = 0, train_accuracy = 0, test_loss = 0, test_accuracy = 0;
  double seconds = 0, samples_per_second = 0;
  // Of the epoch's seconds, the time the training loop spent blocked on the GPU (reading a
  // step's loss back) and on the next batch. Near zero on a GPU: the host issues the steps no
  // faster than the GPU runs them, so the step is host-bound and launch overhead is what to cut.
  double gpu_wait_seconds = 0, data_wait_seconds = 0;
  double sparsity_targeted = 0, sparsity_all = 0;  // of the eval-mode model
  nlohmann::json to_json() const;
};

struct EvalResult {
  double loss = 0, accuracy = 0;
  int64_t count = 0;
};

struct TrainResult {
  bool interrupted = false;  // stopped by SIGINT/SIGTERM after saving
  std::shared_ptr<Module> model;
  nlohmann::json model_config;
  std::vector<EpochMetrics> epochs;
  Device device = Device::CPU;
};

TrainResult train(const TrainConfig& cfg);
// Accuracy and mean loss of `model` (put in eval mode) over every batch of `loader`.
EvalResult evaluate(Module& model, BatchLoader& loader);
// Scales all gradients of the model so that their global L2 norm is at most max_norm (left
// untouched when it already is); returns the norm before scaling (0 when there are none).
double clip_grad_norm(Module& model, double max_norm);

}  // namespace tdrop
