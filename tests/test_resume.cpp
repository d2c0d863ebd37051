// Resumable training: a run of 2 epochs and a run of 1 epoch resumed to 2 end bit-identical,
// with targeted dropout on (its draws depend on the step, which the resume file restores); and
// SIGKILL at random moments never leaves a checkpoint that fails to load.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <filesystem>
#include <random>
#include <thread>

#include "core/error.h"
#include "core/safetensors.h"
#include "data/fashion_mnist.h"
#include "models/checkpoint.h"
#include "models/trainer.h"

namespace tdrop {
namespace {

namespace fs = std::filesystem;

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

TEST(Resume, TwoEpochsEqualOnePlusOneBitForBit) {
  SKIP_WITHOUT_DATA();
  const std::string straight = fresh_dir("straight"), split = fresh_dir("split");
  train(small_run(straight, 2));
  train(small_run(split, 1));
  TrainConfig more;  // what `tdrop train --resume DIR --epochs 2` passes
  more.resume = true;
  more.out_dir = split;
  more.epochs = 2;
  more.device = "";
  more.progress = more.print_epochs = false;
  more.handle_signals = false;
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
  TrainConfig again;
  again.resume = true;
  again.out_dir = split;
  again.epochs = 0;  // as the CLI passes it when --epochs is not given: keep the run's total
  again.device = "";
  again.progress = again.print_epochs = false;
  again.handle_signals = false;
  try {
    train(again);
    FAIL() << "resuming a finished run should say so";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already finished"), std::string::npos) << e.what();
  }
  fs::remove_all(straight);
  fs::remove_all(split);
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
                "--data-dir", data_dir().c_str(), "--out", dir.c_str(), "--no-progress",
                static_cast<char*>(nullptr));
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
