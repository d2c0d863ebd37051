// Resumable training: a run of 2 epochs and a run of 1 epoch resumed to 2 end bit-identical,
// with targeted dropout on (its draws depend on the step, which the resume file restores); and
// SIGKILL at random moments never leaves a checkpoint that fails to load.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/safetensors.h"
#include "data/fashion_mnist.h"
#include "layers/optimizer.h"
#include "layers/targeted.h"
#include "models/checkpoint.h"
#include "models/registry.h"
#include "models/resume.h"
#include "models/trainer.h"
#include "tests/expect_error.h"
#include "tests/model_state.h"

namespace tdrop {
namespace {

namespace fs = std::filesystem;
using testing::error_message;
using testing::expect_error;

std::string data_dir() {
  const char* env = std::getenv("TDROP_DATA_DIR");
  return env && *env ? env : kFashionMnistDir;
}

#define SKIP_WITHOUT_DATA()                                                            \
  if (!fs::exists(data_dir() + "/train-images-idx3-ubyte.gz"))                         \
  GTEST_SKIP() << "Fashion-MNIST not found in " << data_dir()                         \
               << "; install the Debian package dataset-fashion-mnist"

std::string fresh_dir(const std::string& tag) {
  const std::string d = ::testing::TempDir() + "tdrop_resume_" + tag + "_" +
                        std::to_string(::getpid()) + "_" + std::to_string(std::random_device{}());
  fs::remove_all(d);
  return d;
}

TrainConfig small_run(const std::string& out, int epochs) {
  TrainConfig c;
  c.model = "mlp";
  c.data_dir = data_dir();
  c.epochs = epochs;
  c.batch_size = 64;
  c.schedule = "constant";
  c.device = "cpu";
  c.seed = 7;
  c.train_limit = 1000;
  c.out_dir = out;
  c.progress = c.print_epochs = false;
  c.handle_signals = false;
  c.td.mode = TargetedDropoutConfig::Mode::Weight;
  c.td.gamma = 0.5f;
  c.td.alpha = 0.5f;
  return c;
}

std::map<std::string, std::string> weights_of(const std::string& path) {
  std::map<std::string, std::string> out;
  for (auto& [name, t] : load_safetensors(path).tensors) out[name] = t.bytes;
  return out;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

TrainConfig resume_of(const std::string& dir) {
  TrainConfig c;  // what `tdrop train --resume DIR` passes
  c.resume = true;
  c.out_dir = dir;
  c.epochs = 0;
  c.device = "";
  c.progress = c.print_epochs = false;
  c.handle_signals = false;
  return c;
}

TEST(Resume, TwoEpochsEqualOnePlusOneBitForBit) {
  SKIP_WITHOUT_DATA();
  const std::string straight = fresh_dir("straight"), split = fresh_dir("split");
  train(small_run(straight, 2));
  train(small_run(split, 1));
  TrainConfig more = resume_of(split);  // tdrop train --resume DIR --epochs 2
  more.epochs = 2;
  const TrainResult r = train(more);
  ASSERT_EQ(r.epochs.size(), 1u);  // only the missing epoch ran
  EXPECT_EQ(r.epochs[0].epoch, 2);
  const auto a = weights_of(straight + "/model.safetensors");
  const auto b = weights_of(split + "/model.safetensors");
  ASSERT_EQ(a.size(), b.size());
  for (auto& [name, bytes] : a) EXPECT_TRUE(bytes == b.at(name)) << name << " differs";
  // The resumed run's metrics hold both epochs.
  std::ifstream in(split + "/metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) ++lines;
  EXPECT_EQ(lines, 2);
  fs::remove_all(straight);
  fs::remove_all(split);
}

// The epoch lines of metrics.jsonl without their timings.
std::vector<nlohmann::json> logged_epochs(const std::string& dir) {
  std::vector<nlohmann::json> out;
  std::ifstream in(dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    for (const char* timing : {"seconds", "samples_per_second", "gpu_wait_seconds",
                               "data_wait_seconds"})
      j.erase(timing);
    out.push_back(j);
  }
  return out;
}

// Interrupted after any step (mid-epoch, or after an epoch's last step but before its
// evaluation), a resumed run ends with the checkpoint of a straight one, byte for byte (weights
// and the configuration it records), and logs the same epochs, learning rate included.
TEST(Resume, InterruptedAtAnyStepLogsWhatAStraightRunLogs) {
  SKIP_WITHOUT_DATA();
  const std::string straight = fresh_dir("straight3");
  TrainConfig c = small_run(straight, 2);
  c.schedule = "cosine";  // a rate that differs at every step
  train(c);
  const auto want_weights = weights_of(straight + "/model.safetensors");
  const std::string want_file = read_text(straight + "/model.safetensors");
  const auto want_log = logged_epochs(straight);
  ASSERT_EQ(want_log.size(), 2u);
  const long steps_per_epoch = want_log[0].at("step").get<long>();
  for (long stop : {long{7}, steps_per_epoch}) {
    SCOPED_TRACE("stopped after step " + std::to_string(stop));
    const std::string dir = fresh_dir("stop" + std::to_string(stop));
    TrainConfig first = c;
    first.out_dir = dir;
    first.stop_after_step = stop;
    EXPECT_TRUE(train(first).interrupted);
    if (stop < steps_per_epoch) {  // the epoch's training time so far goes into its log line
      EXPECT_GT(std::stod(load_safetensors(dir + "/resume.safetensors").metadata.at("seconds")),
                0.0);
    }
    train(resume_of(dir));
    const auto got = weights_of(dir + "/model.safetensors");
    for (const auto& [name, bytes] : want_weights)
      EXPECT_TRUE(bytes == got.at(name)) << name << " differs";
    EXPECT_TRUE(read_text(dir + "/model.safetensors") == want_file) << "the checkpoint differs";
    const auto log = logged_epochs(dir);
    ASSERT_EQ(log.size(), want_log.size());
    for (size_t e = 0; e < log.size(); ++e) EXPECT_EQ(log[e], want_log[e]) << "epoch " << e + 1;
    fs::remove_all(dir);
  }
  fs::remove_all(straight);
}

// Warm-up spans whole epochs: with 2 warm-up epochs of 16 steps, the rate of epoch 1's last step
// is half the peak (counted in steps, the warm-up would have ended after 2). And --l1 reaches the
// targetable layers' gradients: the same run with it ends with other weights.
TEST(Trainer, WarmupEpochsAndTheL1PenaltyShapeTheRun) {
  SKIP_WITHOUT_DATA();
  const std::string dir = fresh_dir("warmup");
  TrainConfig c = small_run(dir, 2);
  c.warmup_epochs = 2;
  const TrainResult r = train(c);
  ASSERT_EQ(r.epochs.size(), 2u);
  EXPECT_FLOAT_EQ(r.epochs[0].lr, 0.5f * c.lr);  // step 15: (15 + 1) / 32 of the peak
  EXPECT_FLOAT_EQ(r.epochs[1].lr, c.lr);
  fs::remove_all(dir);
  const std::string plain = fresh_dir("l1-off"), with_l1 = fresh_dir("l1-on");
  train(small_run(plain, 1));
  TrainConfig l1 = small_run(with_l1, 1);
  l1.l1 = 1e-3;
  train(l1);
  EXPECT_TRUE(weights_of(plain + "/model.safetensors") != weights_of(with_l1 + "/model.safetensors"));
  fs::remove_all(plain);
  fs::remove_all(with_l1);
}

// Every step draws its own targeted-dropout mask: the trainer numbers each step's draws by the
// step. With every weight targeted and dropped with probability 1/2, plain SGD (no momentum, no
// decay) leaves a dropped weight bit for bit as it was, so after 4 steps about 1/16 of the
// targeted weights never moved. Were every step to draw step 0's mask, about half would not have.
TEST(Trainer, EachStepDrawsItsOwnTargetedDropoutMask) {
  SKIP_WITHOUT_DATA();
  TrainConfig c = small_run("", 1);
  c.train_limit = 4 * c.batch_size;
  c.momentum = c.weight_decay = 0;
  c.td.gamma = 1;
  c.td.alpha = 0.5f;
  const TrainResult r = train(c);
  nlohmann::json cfg = r.model_config;
  const auto initial = build_model(c.model, cfg);
  initial->reset_parameters(c.seed);
  const auto before = targetable_layers(*initial), after = targetable_layers(*r.model);
  ASSERT_EQ(before.size(), after.size());
  ASSERT_GT(after.size(), 0u);
  int64_t unmoved = 0, total = 0;
  for (size_t l = 0; l < after.size(); ++l) {
    const std::vector<float> w0 = before[l].second->weight().to_vector<float>();
    const std::vector<float> w4 = after[l].second->weight().to_vector<float>();
    ASSERT_EQ(w0.size(), w4.size()) << after[l].first;
    for (size_t i = 0; i < w0.size(); ++i)
      unmoved += std::memcmp(&w0[i], &w4[i], sizeof(float)) == 0;
    total += static_cast<int64_t>(w0.size());
  }
  const double share = static_cast<double>(unmoved) / static_cast<double>(total);
  EXPECT_GT(share, 0.04) << "too few weights were dropped in all 4 steps";
  EXPECT_LT(share, 0.10) << "the steps drew overlapping masks: " << unmoved << " of " << total
                         << " targeted weights never moved";
}

// Nothing non-finite is written at an epoch's end either. Here the epoch's last (and only) step
// overflows the weights in its update: its loss, computed before the update, is finite, and the
// L1 subgradient alone moves each targetable weight by lr * l1 = 1e39. The run stops before
// metrics.jsonl and the model are written, so an earlier epoch's files would be left as they were.
TEST(Trainer, AnUpdateThatOverflowsTheWeightsWritesNothing) {
  SKIP_WITHOUT_DATA();
  const std::string dir = fresh_dir("overflow");
  TrainConfig c = small_run(dir, 1);
  c.train_limit = c.batch_size;
  c.td = TargetedDropoutConfig{};  // with it, evaluating the overflowed model would stop first
  c.lr = 1e36f;
  c.l1 = 1e3f;
  expect_error([&] { train(c); }, {"training diverged before step 1", "is not finite",
                                   "No checkpoint was saved"});
  EXPECT_TRUE(fs::exists(dir + "/config.json"));
  EXPECT_FALSE(fs::exists(dir + "/metrics.jsonl"));
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(dir + "/resume.safetensors"));
  fs::remove_all(dir);
}

// A cosine schedule is laid out over the run's epochs: resuming with another total would give
// the epochs already trained a different curve (a 1-epoch run anneals to 0, a 2-epoch one is at
// half the rate there), so it is refused, and a finished run does not invite more epochs.
TEST(Resume, ScheduleSpanningTheRunKeepsItsEpochs) {
  SKIP_WITHOUT_DATA();
  const std::string dir = fresh_dir("cosine");
  TrainConfig c = small_run(dir, 1);
  c.schedule = "cosine";
  train(c);
  TrainConfig longer = resume_of(dir);
  longer.epochs = 2;
  expect_error([&] { train(longer); }, {"cosine learning-rate schedule spans its 1 epochs",
                                        "--epochs 2", "resume with --epochs 1"});
  TrainConfig same = resume_of(dir);
  same.epochs = 1;
  expect_error([&] { train(same); }, {"already finished 1 epochs and its learning-rate schedule"});
  // A device given on resume replaces the run's own: it is the one parsed (here, and refused).
  TrainConfig elsewhere = resume_of(dir);
  elsewhere.device = "tpu";
  expect_error([&] { train(elsewhere); }, {"tpu"});
  fs::remove_all(dir);
}

TEST(Resume, SavingEveryNStepsChangesNothingAndFinishedRunsRefuse) {
  SKIP_WITHOUT_DATA();
  const std::string straight = fresh_dir("straight2"), split = fresh_dir("mid");
  train(small_run(straight, 1));
  // Saving every 10 steps must not perturb the run; resuming a finished run refuses politely.
  TrainConfig c = small_run(split, 1);
  c.save_every = 10;
  train(c);
  const auto a = weights_of(straight + "/model.safetensors");
  const auto b = weights_of(split + "/model.safetensors");
  for (auto& [name, bytes] : a) EXPECT_TRUE(bytes == b.at(name)) << name << " differs";
  try {
    train(resume_of(split));  // no --epochs: the run's own total, already reached
    FAIL() << "resuming a finished run should say so";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already finished"), std::string::npos) << e.what();
  }
  fs::remove_all(straight);
  fs::remove_all(split);
}

// A fresh run into a directory that holds a run would replace its resume point (or, killed
// early, leave it beside the new config for --resume to mix): refused, and nothing is touched,
// unless the user passes --overwrite.
TEST(Resume, AFreshRunRefusesADirectoryHoldingARun) {
  SKIP_WITHOUT_DATA();
  const std::string dir = fresh_dir("claimed");
  train(small_run(dir, 1));
  const std::string config = read_text(dir + "/config.json");
  const auto resume = weights_of(dir + "/resume.safetensors");
  TrainConfig other = small_run(dir, 1);
  other.lr = 0.3f;
  const std::string m = error_message([&] { train(other); });
  EXPECT_NE(m.find("already holds a run"), std::string::npos) << m;
  EXPECT_NE(m.find("--overwrite"), std::string::npos) << m;
  EXPECT_EQ(read_text(dir + "/config.json"), config) << "the refused run touched config.json";
  EXPECT_TRUE(weights_of(dir + "/resume.safetensors") == resume);
  // --overwrite removes the old run's files first: a replacing run that then fails (here, on a
  // missing data folder) leaves no resume point of the old run beside the new configuration.
  other.overwrite = true;
  TrainConfig failing = other;
  failing.data_dir = dir + "/no-data-here";
  expect_error([&] { train(failing); }, {"no-data-here", "not found"});
  for (const char* f : {"config.json", "resume.safetensors", "model.safetensors", "metrics.jsonl"})
    EXPECT_FALSE(fs::exists(dir + "/" + f)) << f << " of the old run is left";
  train(other);
  EXPECT_NE(read_text(dir + "/config.json"), config);
  // A file where the run directory should be is named before any data is loaded.
  const std::string file = dir + "/metrics.jsonl";
  TrainConfig into_file = small_run(file, 1);
  EXPECT_NE(error_message([&] { train(into_file); }).find("is not a directory"), std::string::npos);
  fs::remove_all(dir);
}

// A run's config.json holds every setting that shapes the run and reads back to the same
// settings (--resume continues from it): each one is set away from its default here.
TEST(Resume, ConfigRoundTripsEverySavedSetting) {
  TrainConfig c;
  c.model = "lenet5";
  c.model_config = {{"note", "kept as given"}};
  c.dataset = "cifar10";
  c.data_dir = "some/dir";
  c.epochs = 7;
  c.batch_size = 33;
  c.optimizer = "adamw";
  c.lr = 0.125f;
  c.momentum = 0.5f;
  c.weight_decay = 0.25f;
  c.schedule = "step";
  c.warmup_epochs = 2;
  c.device = "cpu";
  c.seed = std::numeric_limits<uint64_t>::max();
  c.train_limit = 500;
  c.td.mode = TargetedDropoutConfig::Mode::Unit;
  c.td.gamma = 0.625;
  c.td.alpha = 0.375f;
  c.td.ramp = true;
  c.td.ramp_steps = 99;
  c.td.unit_per_weight_draws = true;
  c.td.keep_all_in_eval = true;
  c.td.rescale = true;
  c.l1 = 0.001f;
  c.save_every = 13;
  c.augment = "crop-flip";
  c.augment_fill = "zero";
  c.clip_grad_norm = 2.5f;
  const TrainConfig b = TrainConfig::from_json(c.to_json(), "config.json");
  EXPECT_EQ(b.model, c.model);
  EXPECT_EQ(b.model_config, c.model_config);
  EXPECT_EQ(b.dataset, c.dataset);
  EXPECT_EQ(b.data_dir, c.data_dir);
  EXPECT_EQ(b.epochs, c.epochs);
  EXPECT_EQ(b.batch_size, c.batch_size);
  EXPECT_EQ(b.optimizer, c.optimizer);
  EXPECT_EQ(b.lr, c.lr);
  EXPECT_EQ(b.momentum, c.momentum);
  EXPECT_EQ(b.weight_decay, c.weight_decay);
  EXPECT_EQ(b.schedule, c.schedule);
  EXPECT_EQ(b.warmup_epochs, c.warmup_epochs);
  EXPECT_EQ(b.device, c.device);
  EXPECT_EQ(b.seed, c.seed);
  EXPECT_EQ(b.train_limit, c.train_limit);
  EXPECT_EQ(b.td.mode, c.td.mode);
  EXPECT_EQ(b.td.gamma, c.td.gamma);
  EXPECT_EQ(b.td.alpha, c.td.alpha);
  EXPECT_EQ(b.td.ramp, c.td.ramp);
  EXPECT_EQ(b.td.ramp_steps, c.td.ramp_steps);
  EXPECT_EQ(b.td.unit_per_weight_draws, c.td.unit_per_weight_draws);
  EXPECT_EQ(b.td.keep_all_in_eval, c.td.keep_all_in_eval);
  EXPECT_EQ(b.td.rescale, c.td.rescale);
  EXPECT_EQ(b.l1, c.l1);
  EXPECT_EQ(b.save_every, c.save_every);
  EXPECT_EQ(b.augment, c.augment);
  EXPECT_EQ(b.augment_fill, c.augment_fill);
  EXPECT_EQ(b.clip_grad_norm, c.clip_grad_norm);
  EXPECT_EQ(b.to_json(), c.to_json());
}

// A hand-edited config.json is checked as the CLI checks options, naming the file and key.
TEST(Resume, DamagedConfigIsAnErrorNamingTheFile) {
  SKIP_WITHOUT_DATA();
  const std::string dir = fresh_dir("config");
  train(small_run(dir, 1));
  const nlohmann::json good = nlohmann::json::parse(read_text(dir + "/config.json"));
  const std::vector<std::pair<std::string, nlohmann::json>> edits = {
      {"batch_size", 9223372036854775807LL}, {"batch_size", 1e30}, {"epochs", 2.9},
      {"epochs", 3000000000LL}, {"lr", -1}, {"model_config", "abc"}, {"seed", -4},
      {"train_limit", "many"}, {"momentum", 1.5}, {"augment_fill", "grey"}};
  for (const auto& [key, v] : edits) {
    SCOPED_TRACE(key + " = " + v.dump());
    nlohmann::json bad = good;
    bad[key] = v;
    std::ofstream(dir + "/config.json") << bad.dump(2);
    const std::string m = error_message([&] { train(resume_of(dir)); });
    EXPECT_NE(m.find("config.json"), std::string::npos) << m;
    EXPECT_NE(m.find(key), std::string::npos) << m;
  }
  // Nested 200000 deep (a recursive parse or copy would overflow the stack).
  std::ofstream(dir + "/config.json")
      << "{\"model_config\": " << std::string(200000, '[') << std::string(200000, ']') << "}";
  const std::string m = error_message([&] { train(resume_of(dir)); });
  EXPECT_NE(m.find("config.json"), std::string::npos) << m;
  EXPECT_NE(m.find("nests deeper"), std::string::npos) << m;
  fs::remove_all(dir);
}

// Crops were once padded with 0, mid-grey after normalisation; a run configured then has no
// 'augment_fill' and, if it augments, is refused on resume rather than switched to black
// padding mid-run. Without augmentation the padding never mattered: it resumes.
TEST(Resume, RunsFromBeforeBlackCropPaddingResumeOnlyWithoutCrops) {
  SKIP_WITHOUT_DATA();
  for (const char* augment : {"crop-flip", "none"}) {
    SCOPED_TRACE(augment);
    const std::string dir = fresh_dir("fill");
    TrainConfig first = small_run(dir, 1);
    first.augment = augment;
    train(first);
    nlohmann::json cfg = nlohmann::json::parse(read_text(dir + "/config.json"));
    EXPECT_EQ(cfg["augment_fill"], "black");
    cfg.erase("augment_fill");
    std::ofstream(dir + "/config.json") << cfg.dump(2);
    TrainConfig more = resume_of(dir);
    more.epochs = 2;
    if (std::string(augment) == "none") {
      EXPECT_EQ(train(more).epochs.size(), 1u);  // epoch 2 of 2
    } else {
      expect_error([&] { train(more); }, {"padded by 0", "start it again"});
      cfg["augment_fill"] = "black";
      std::ofstream(dir + "/config.json") << cfg.dump(2);
      EXPECT_EQ(train(more).epochs.size(), 1u);
    }
    fs::remove_all(dir);
  }
}

// A resume point that does not fit the run's own arithmetic would skip or replay batches.
TEST(Resume, DamagedPositionIsAnError) {
  SKIP_WITHOUT_DATA();
  const std::string dir = fresh_dir("position");
  TrainConfig c = small_run(dir, 2);
  c.save_every = 5;
  c.epochs = 1;
  train(c);
  const std::string path = dir + "/resume.safetensors";
  const SafetensorsFile good = load_safetensors(path);
  // Each damage is refused for its own reason: the value as read, or the position against the
  // others or against the run.
  struct Edit {
    std::string key, value, reason;
  };
  const std::vector<Edit> edits = {
      {"batch", "999", "does not fit this run's"},
      {"batch", "3", "does not fit this run's"},
      {"epoch", "1.7", "'epoch' is not an integer count"},
      {"step", "9223372036854775807", "does not fit this run's"},
      {"optimizer_steps", "-5", "optimizer steps -5 do not fit"},
      {"optimizer_steps", "100000", "optimizer steps 100000 do not fit"},
      {"seen", "100000", "does not fit this run's"},
      {"correct", "-1", "inconsistent position"},
      {"correct", "100000", "inconsistent position"}};
  for (const Edit& e : edits) {
    SCOPED_TRACE(e.key + " = " + e.value);
    SafetensorsFile bad = good;
    bad.metadata[e.key] = e.value;
    save_safetensors(path, bad);
    TrainConfig more = resume_of(dir);
    more.epochs = 2;
    const std::string m = error_message([&] { train(more); });
    EXPECT_NE(m.find("resume.safetensors"), std::string::npos) << m;
    EXPECT_NE(m.find(e.reason), std::string::npos) << m;
  }
  {  // a file of another kind at the resume file's name (a model checkpoint's format)
    SafetensorsFile other = good;
    other.metadata["format"] = "tdrop";
    save_safetensors(path, other);
    TrainConfig more = resume_of(dir);
    more.epochs = 2;
    expect_error([&] { train(more); }, {"resume.safetensors", "not a tdrop resume file"});
  }
  save_safetensors(path, good);
  TrainConfig more = resume_of(dir);
  more.epochs = 2;
  EXPECT_EQ(train(more).epochs.size(), 1u) << "the undamaged file resumes";
  fs::remove_all(dir);
}

// BatchNorm's running statistics are state a resumed run needs (resnet20 evaluates with them):
// the resume file holds them, and loading it restores them bit for bit.
TEST(Resume, ResumeFileKeepsBatchNormRunningStatistics) {
  const std::string dir = fresh_dir("batchnorm");
  fs::create_directories(dir);
  nlohmann::json cfg;
  const auto model = testing::resnet20_with_moved_statistics(3, cfg);
  auto opt = make_optimizer("sgd", model->parameters(), 0.1f, 0.0f, 0.0f);
  save_resume(dir, *model, *opt, ResumePoint{});
  auto loaded = build_model("resnet20", cfg);
  auto loaded_opt = make_optimizer("sgd", loaded->parameters(), 0.1f, 0.0f, 0.0f);
  load_resume(dir, *loaded, *loaded_opt);
  testing::expect_same_buffers(*model, *loaded);
  fs::remove_all(dir);
}

// The trainer never saves a NaN (a NaN loss stops the run first): one in a resume point is
// damage, named with its tensor, whether a weight or an optimizer buffer.
TEST(Resume, NonFiniteTensorIsAnErrorNamingIt) {
  SKIP_WITHOUT_DATA();
  const std::string dir = fresh_dir("nonfinite");
  TrainConfig c = small_run(dir, 1);
  c.save_every = 5;
  c.momentum = 0.9f;  // momentum buffers are optimizer state
  c.epochs = 1;
  c.schedule = "constant";
  train(c);
  const std::string path = dir + "/resume.safetensors";
  const SafetensorsFile good = load_safetensors(path);
  for (const char* name : {"model/1.weight", "optim/momentum.0"}) {
    SCOPED_TRACE(name);
    SafetensorsFile bad = good;
    ASSERT_TRUE(bad.tensors.count(name)) << "no tensor " << name << " in the resume file";
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(bad.tensors[name].bytes.data() + 8, &nan, 4);  // entry 2
    save_safetensors(path, bad);
    TrainConfig more = resume_of(dir);
    more.epochs = 2;
    const std::string m = error_message([&] { train(more); });
    EXPECT_NE(m.find("resume.safetensors"), std::string::npos) << m;
    EXPECT_NE(m.find(std::string(name).substr(6)), std::string::npos) << m;
    EXPECT_NE(m.find("non-finite"), std::string::npos) << m;
  }
  fs::remove_all(dir);
}

// SIGKILL at random moments, many times: whatever is on disk must load.
TEST(Resume, SigkillNeverLeavesABrokenCheckpoint) {
  SKIP_WITHOUT_DATA();
  const char* bin_dir = std::getenv("TDROP_TEST_BINARY_DIR");
  if (!bin_dir) GTEST_SKIP() << "TDROP_TEST_BINARY_DIR is not set (ctest sets it)";
  const std::string bin = std::string(bin_dir) + "/tdrop";
  const std::string dir = fresh_dir("kill");
  std::mt19937 rng(std::random_device{}());
  int loaded = 0;
  int wait_ms = 300;  // doubles while nothing has been saved yet (slow starts, sanitizer builds)
  for (int round = 0; round < 12; ++round) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      std::freopen("/dev/null", "w", stdout);
      std::freopen("/dev/null", "w", stderr);
      if (fs::exists(dir + "/resume.safetensors"))
        ::execl(bin.c_str(), "tdrop", "train", "--resume", dir.c_str(), "--epochs", "50",
                "--no-progress", static_cast<char*>(nullptr));
      else
        ::execl(bin.c_str(), "tdrop", "train", "--epochs", "50", "--device", "cpu",
                "--train-limit", "2000", "--batch-size", "32", "--save-every", "3",
                "--data-dir", data_dir().c_str(), "--out", dir.c_str(), "--overwrite",
                "--no-progress", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(
        wait_ms + std::uniform_int_distribution<int>(0, 1200)(rng)));
    ::kill(pid, SIGKILL);
    if (!fs::exists(dir + "/resume.safetensors")) wait_ms = std::min(wait_ms * 2, 30000);
    int status = 0;
    ::waitpid(pid, &status, 0);
    for (const char* f : {"/resume.safetensors", "/model.safetensors"}) {
      if (!fs::exists(dir + f)) continue;
      EXPECT_NO_THROW(load_safetensors(dir + f)) << f << " after kill " << round;
      ++loaded;
    }
    if (fs::exists(dir + "/model.safetensors")) {
      EXPECT_NO_THROW(load_checkpoint(dir + "/model.safetensors")) << "round " << round;
    }
  }
  EXPECT_GT(loaded, 0) << "no checkpoint was ever written: the kills came too early";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tdrop
