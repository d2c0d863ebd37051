// The real `tdrop` binary, run as a user would: every subcommand's --help, bad options and values,
// missing/corrupt checkpoints (each a non-zero exit with one clear error line, never a signal),
// `inspect --json`, and a short train -> eval round trip when Fashion-MNIST is installed.
// ctest sets TDROP_TEST_BINARY_DIR to the build directory; without it these tests skip.
#include <cblas.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tests/temp_dir.h"
#include "core/atomic_file.h"
#include "core/device.h"
#include "data/fashion_mnist.h"
#include "tests/grad_check.h"
#include "tests/idx_files.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace tdrop {
namespace {

using ::tdrop::testing::TempDir;
using ::tdrop::testing::fresh_seed;
using ::tdrop::testing::write_fashion_mnist_split;

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

// Fashion-MNIST's directory (TDROP_DATA_DIR, else the Debian one), or "" when it is not there.
std::string fashion_mnist_dir() {
  const char* env = std::getenv("TDROP_DATA_DIR");
  const std::string data = env && *env ? env : kFashionMnistDir;
  return fs::exists(data + "/train-images-idx3-ubyte.gz") ? data : "";
}
const char* const kNoFashionMnist =
    "Fashion-MNIST not found; install the Debian package dataset-fashion-mnist";

// A minimal RFC 4180 reader: quoted fields may hold commas, doubled quotes and line breaks.
// Rows end in '\n', the last one included.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows(1);
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '"' && quoted && i + 1 < text.size() && text[i + 1] == '"') {
      field += text[++i];
    } else if (c == '"') {
      quoted = !quoted;
    } else if (quoted || (c != ',' && c != '\n')) {
      field += c;
    } else {
      rows.back().push_back(std::move(field));
      field.clear();
      if (c == '\n') rows.emplace_back();
    }
  }
  if (!field.empty()) rows.back().push_back(field);  // a last row without its '\n'
  if (rows.back().empty()) rows.pop_back();
  return rows;
}

// Sets an environment variable for the `tdrop` processes a test starts, and unsets it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~ScopedEnv() { ::unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

struct RunResult {
  int status = -1;  // raw wait status
  std::string out, err;
  bool exited() const { return WIFEXITED(status); }
  int code() const { return WEXITSTATUS(status); }
  std::string summary() const {
    std::ostringstream os;
    if (WIFSIGNALED(status)) os << "killed by signal " << WTERMSIG(status);
    else os << "exit " << code();
    os << "\n--- stdout ---\n" << out << "--- stderr ---\n" << err;
    return os.str();
  }
};

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("TDROP_TEST_BINARY_DIR");
    if (!dir || !*dir)
      GTEST_SKIP() << "TDROP_TEST_BINARY_DIR is not set (ctest sets it to the build directory); "
                      "run `ctest --test-dir build` or set it by hand";
    binary_ = (fs::path(dir) / "tdrop").string();
    if (!fs::exists(binary_)) GTEST_SKIP() << binary_ << " does not exist; build the tdrop target";
  }

  // Runs `tdrop <args>` (args are shell words, already quoted where needed). `exec` makes the
  // binary replace the shell, so a crash shows up as a signal in the wait status instead of the
  // shell's exit code 128+n; `timeout` bounds a hang.
  // `env`, when given, is an env(1) command line that runs it (e.g. "env -u VAR").
  RunResult run(const std::string& args, const std::string& env = "") {
    const std::string err_path = tmp_.file("stderr.txt");
    const std::string cmd = "exec " + (env.empty() ? "" : env + " ") + "timeout -s KILL 300 " +
                            quote(binary_) + " " + args + " 2>" + quote(err_path) + " </dev/null";
    RunResult r;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) {
      ADD_FAILURE() << "popen failed for " << cmd;
      return r;
    }
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
    r.status = ::pclose(p);
    std::ifstream in(err_path);
    std::ostringstream ss;
    ss << in.rdbuf();
    r.err = ss.str();
    return r;
  }

  // A failed command: exits normally (no signal), non-zero, and says what went wrong in one
  // line on stderr that contains `needle` (CLI11 may add its "Run with --help" hint after it).
  // `code`, when given, is the exit code expected (1 for a tdrop::Error).
  void expect_clean_failure(const std::string& args, const std::string& needle, int code = -1) {
    SCOPED_TRACE("tdrop " + args.substr(0, 300));
    const RunResult r = run(args);
    ASSERT_TRUE(r.exited()) << r.summary();
    EXPECT_NE(r.code(), 0) << r.summary();
    if (code >= 0) {
      EXPECT_EQ(r.code(), code) << r.summary();
    }
    EXPECT_LT(r.code(), 128) << "a shell-reported signal: " << r.summary();
    const std::vector<std::string> lines = lines_of(r.err);
    ASSERT_GE(lines.size(), 1u) << "no error message: " << r.summary();
    EXPECT_NE(lines[0].find(needle), std::string::npos)
        << "first stderr line \"" << lines[0] << "\" lacks \"" << needle << "\"";
    for (size_t i = 1; i < lines.size(); ++i)
      EXPECT_EQ(lines[i], "Run with --help for more information.") << "extra stderr line " << i;
    EXPECT_EQ(r.err.find("terminate called"), std::string::npos) << r.summary();
  }

  // A one-epoch MLP on 1000 training images: enough of a checkpoint for prune to sweep.
  std::string quick_checkpoint(const std::string& data, const std::string& extra = "") {
    const std::string out = tmp_.file("run");
    const RunResult t = run("train --model mlp --epochs 1 --train-limit 1000 --device cpu "
                            "--no-progress --data-dir " + quote(data) + " --out " + quote(out) +
                            extra);
    EXPECT_EQ(t.status, 0) << t.summary();
    return out + "/model.safetensors";
  }

  std::string binary_;
  TempDir tmp_;
};

TEST_F(Cli, TopLevelHelpAndVersion) {
  RunResult r = run("--help");
  ASSERT_TRUE(r.exited()) << r.summary();
  EXPECT_EQ(r.code(), 0) << r.summary();
  for (const char* word : {"train", "eval", "inspect", "prune", "--version"})
    EXPECT_NE(r.out.find(word), std::string::npos) << word << "\n" << r.out;
  r = run("--version");
  EXPECT_EQ(r.code(), 0) << r.summary();
  EXPECT_NE(r.out.find("tdrop 0."), std::string::npos) << r.out;
}

TEST_F(Cli, NoArgumentsPrintsTheUsageScreen) {
  const RunResult r = run("");
  ASSERT_TRUE(r.exited()) << r.summary();
  EXPECT_EQ(r.code(), 2) << r.summary();
  EXPECT_TRUE(r.out.empty()) << r.summary();
  for (const char* word : {"Usage:", "train", "eval", "inspect", "prune", "Examples:",
                           "--td weight", "SUBCOMMAND --help"})
    EXPECT_NE(r.err.find(word), std::string::npos) << word << "\n" << r.err;
}

TEST_F(Cli, EverySubcommandHasHelp) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"train",
       {"--model", "--dataset", "--data-dir", "--epochs", "--batch-size", "--optimizer", "--lr",
        "--momentum", "--weight-decay", "--schedule", "--warmup-epochs", "--device", "--seed",
        "--out", "--no-progress", "--plot", "--cudnn-nondeterministic", "sgd", "adam", "cosine",
        "auto"}},
      {"eval",
       {"--checkpoint", "--dataset", "--data-dir", "--device", "--json", "--bn-recalibrate"}},
      {"inspect", {"--model", "--json", "--list"}},
      {"prune",
       {"--checkpoint", "--mode", "--fractions", "--device", "--json", "--csv", "--plot",
        "--bn-recalibrate"}},
  };
  for (const auto& [sub, options] : cases) {
    SCOPED_TRACE(sub);
    const RunResult r = run(sub + " --help");
    ASSERT_TRUE(r.exited()) << r.summary();
    EXPECT_EQ(r.code(), 0) << r.summary();
    EXPECT_TRUE(r.err.empty()) << r.summary();
    for (const std::string& o : options)
      EXPECT_NE(r.out.find(o), std::string::npos) << sub << " --help does not mention " << o;
  }
}

TEST_F(Cli, UnknownOptionsAndInvalidValuesAreErrors) {
  const std::string out = quote(tmp_.file("run"));  // never the default runs/ in the cwd
  expect_clean_failure("train --bogus-option --out " + out, "--bogus-option");
  expect_clean_failure("train --optimizer foo --out " + out, "foo");
  expect_clean_failure("train --epochs 0 --out " + out, "--epochs");
  expect_clean_failure("train --epochs abc --out " + out, "abc");
  expect_clean_failure("train --device tpu --out " + out, "tpu");
  expect_clean_failure("train --batch-size 0 --out " + out, "--batch-size");
  expect_clean_failure("train --schedule linear --out " + out, "linear");
  expect_clean_failure("train --momentum 1.5 --out " + out, "--momentum");
  // NaN passes a range check; config.json would hold null, which --resume refuses.
  expect_clean_failure("train --momentum nan --optimizer adam --out " + out, "--momentum");
  expect_clean_failure("train --weight-decay nan --out " + out, "--weight-decay");
  expect_clean_failure("train --epochs 2 --warmup-epochs 3 --out " + out, "--warmup-epochs");
  expect_clean_failure("train --model resnet9000 --out " + out, "resnet9000");
  expect_clean_failure("eval --device tpu --checkpoint x", "tpu");
  expect_clean_failure("eval", "--checkpoint");
  expect_clean_failure("inspect --model nosuchmodel", "nosuchmodel");
  expect_clean_failure("prune --mode foo --checkpoint x", "foo");
  expect_clean_failure("prune --fractions 2 --device cpu --checkpoint x", "--fractions");
  expect_clean_failure("prune --fractions abc --device cpu --checkpoint x", "abc");
  expect_clean_failure("prune", "--checkpoint");
  EXPECT_FALSE(fs::exists(tmp_.file("run"))) << "a rejected command must not create its run dir";
}

// An option that acts only with another is an error when that one is missing, before any
// data loads or run directory appears (it used to train without the ramp, or without dropout).
TEST_F(Cli, InertTargetedDropoutOptionsAreErrors) {
  const std::string out = " --out " + quote(tmp_.file("run"));
  expect_clean_failure("train --td-gamma 0.5" + out, "--td-gamma needs --td weight|unit");
  expect_clean_failure("train --td-ramp" + out, "--td-ramp needs --td weight|unit");
  expect_clean_failure("train --td weight --td-ramp-steps 1000" + out,
                       "--td-ramp-steps needs --td-ramp");
  expect_clean_failure("train --td weight --td-unit-per-weight" + out,
                       "--td-unit-per-weight needs --td unit");
  expect_clean_failure("train --dropout weight" + out, "--dropout needs --dropout-rate");
  expect_clean_failure("train --dropout-rate 0.5" + out, "--dropout-rate needs --dropout");
  EXPECT_FALSE(fs::exists(tmp_.file("run")));
}

// Every targeted-dropout option reaches the model's configuration (config.json, which the
// checkpoint and --resume repeat); the untargeted baseline is dropout over every weight, rescaled,
// with every weight kept in eval. --resume keeps the run's own epochs and accepts --td-impl.
TEST_F(Cli, TrainRecordsEveryTargetedDropoutOption) {
  const std::string data = fashion_mnist_dir();
  if (data.empty()) GTEST_SKIP() << kNoFashionMnist;
  const auto td_of = [&](const std::string& name, const std::string& options) {
    const std::string out = tmp_.file(name);
    const RunResult r = run("train --model mlp --epochs 1 --train-limit 256 --device cpu "
                            "--no-progress --data-dir " + quote(data) + " --out " + quote(out) +
                            options);
    EXPECT_EQ(r.status, 0) << r.summary();
    return json::parse(read_file(out + "/config.json")).at("model_config").at("td");
  };
  const json td = td_of("td", " --td unit --td-gamma 0.3 --td-alpha 0.2 --td-ramp "
                              "--td-ramp-steps 7 --td-unit-per-weight --td-eval-keep-all");
  EXPECT_EQ(td.at("mode"), "unit");
  EXPECT_NEAR(td.at("gamma").get<double>(), 0.3, 1e-12);
  EXPECT_NEAR(td.at("alpha").get<double>(), 0.2, 1e-7);
  EXPECT_EQ(td.at("ramp"), true);
  EXPECT_EQ(td.at("ramp_steps"), 7);
  EXPECT_EQ(td.at("unit_per_weight_draws"), true);
  EXPECT_EQ(td.at("keep_all_in_eval"), true);
  EXPECT_EQ(td.at("rescale"), false);
  const json dropout = td_of("dropout", " --dropout weight --dropout-rate 0.4");
  EXPECT_EQ(dropout.at("mode"), "weight");
  EXPECT_EQ(dropout.at("gamma"), 1.0);
  EXPECT_NEAR(dropout.at("alpha").get<double>(), 0.4, 1e-7);
  EXPECT_EQ(dropout.at("rescale"), true);
  EXPECT_EQ(dropout.at("keep_all_in_eval"), true);
  EXPECT_EQ(dropout.at("ramp"), false);
  expect_clean_failure("train --resume " + quote(tmp_.file("td")) + " --td-impl unfused",
                       "the run already finished 1 epochs");
  expect_clean_failure("train --dropout weight --dropout-rate 0.5 --td weight --out " +
                           quote(tmp_.file("both")),
                       "--dropout and --td are alternatives");
}

// --resume continues a run with its own configuration: an option that would change it is an
// error naming the option, not silently ignored; the run-independent ones are accepted.
TEST_F(Cli, ResumeRefusesOptionsThatWouldChangeTheRun) {
  const std::string dir = quote(tmp_.file("no-such-run"));
  expect_clean_failure("train --resume " + dir + " --lr 0.3", "--lr");
  expect_clean_failure("train --resume " + dir + " --td weight --td-gamma 0.5", "--td-gamma");
  expect_clean_failure("train --resume " + dir + " --out " + dir, "--out");
  // Allowed options get past that check and fail on the missing run instead.
  expect_clean_failure("train --resume " + dir + " --epochs 3 --device cpu --no-progress",
                       "config.json");
}

TEST_F(Cli, ErrorLinesStayShort) {
  // A value out of range is rejected on one terminal line that names the option and the value
  // (range checks once printed DBL_MAX in full here, and "--seed -1" became 2^64 - 1).
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"--lr", "-1"},          {"--lr", "0"},           {"--lr", "nan"},
      {"--lr", "2000"},        {"--train-limit", "-1"}, {"--seed", "-1"},
      {"--save-every", "-3"},  {"--seed", "1.5"},       {"--td-ramp-steps", "-2"},
      {"--seed", "18446744073709551616"}, {"--train-limit", "9223372036854775808"}};
  for (const auto& [option, value] : bad) {
    const std::string td = option == "--td-ramp-steps" ? " --td weight --td-ramp" : "";
    const RunResult r =
        run("train " + option + " " + value + td + " --out " + quote(tmp_.file("run")));
    ASSERT_TRUE(r.exited()) << r.summary();
    EXPECT_NE(r.code(), 0) << r.summary();
    const std::vector<std::string> lines = lines_of(r.err);
    ASSERT_FALSE(lines.empty()) << r.summary();
    EXPECT_NE(lines[0].find(option), std::string::npos) << lines[0];
    EXPECT_NE(lines[0].find(value), std::string::npos) << lines[0];
    EXPECT_LE(lines[0].size(), 100u) << lines[0];
  }
  EXPECT_FALSE(fs::exists(tmp_.file("run")));
}

TEST_F(Cli, CudaWithoutAGpuIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present: --device cuda is valid here";
  expect_clean_failure("train --device cuda --epochs 1 --no-progress --out " +
                           quote(tmp_.file("run")),
                       "no usable CUDA GPU");
  expect_clean_failure("eval --device cuda --checkpoint " + quote(tmp_.file("none")),
                       "no usable CUDA GPU");
  EXPECT_FALSE(fs::exists(tmp_.file("run")));
}

TEST_F(Cli, MissingAndCorruptCheckpointsAreErrors) {
  expect_clean_failure("eval --checkpoint /nonexistent", "/nonexistent");
  expect_clean_failure("eval --checkpoint " + quote(tmp_.file("no such dir/model.safetensors")),
                       tmp_.file("no such dir/model.safetensors"));

  const uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::string garbage(10000, '\0');
  for (char& c : garbage) c = static_cast<char>(rng());
  const std::string corrupt = tmp_.file("corrupt.safetensors");
  write_file_atomic(corrupt, garbage);
  expect_clean_failure("eval --device cpu --checkpoint " + quote(corrupt), corrupt);
  expect_clean_failure("prune --device cpu --checkpoint " + quote(corrupt), corrupt);
  expect_clean_failure("prune --device cpu --checkpoint /nonexistent", "/nonexistent");

  // A plausible header whose JSON is cut short, then an empty file.
  std::string cut = std::string("\x40\0\0\0\0\0\0\0", 8) + "{\"1.weight\": {\"dtype\": \"F32\", \"sha";
  cut.resize(8 + 64, ' ');
  const std::string truncated = tmp_.file("truncated.safetensors");
  write_file_atomic(truncated, cut);
  expect_clean_failure("eval --device cpu --checkpoint " + quote(truncated), truncated);
  const std::string empty = tmp_.file("empty.safetensors");
  write_file_atomic(empty, "");
  expect_clean_failure("eval --device cpu --checkpoint " + quote(empty), empty);
  // A directory where a file is expected.
  expect_clean_failure("eval --device cpu --checkpoint " + quote(fs::temp_directory_path()),
                       fs::temp_directory_path().string());
}

TEST_F(Cli, InspectJsonDescribesTheMlp) {
  const RunResult r = run("inspect --model mlp --json");
  ASSERT_TRUE(r.exited()) << r.summary();
  ASSERT_EQ(r.code(), 0) << r.summary();
  json j;
  ASSERT_NO_THROW(j = json::parse(r.out)) << r.out;
  EXPECT_EQ(j.at("model"), "mlp");
  EXPECT_EQ(j.at("total_parameters"), 266610);  // 784*300+300 + 300*100+100 + 100*10+10
  const json& layers = j.at("layers");
  ASSERT_EQ(layers.size(), 6u);
  EXPECT_EQ(layers[0].at("layer"), "Flatten");
  EXPECT_EQ(layers[1].at("output_shape"), json({1, 300}));
  EXPECT_EQ(layers[1].at("parameters"), 235500);
  EXPECT_EQ(layers[3].at("parameters"), 30100);
  EXPECT_EQ(layers[5].at("output_shape"), json({1, 10}));
  EXPECT_EQ(layers[5].at("parameters"), 1010);
  int64_t sum = 0;
  for (const json& p : j.at("parameters")) sum += p.at("count").get<int64_t>();
  EXPECT_EQ(sum, 266610);
  EXPECT_EQ(j.at("parameters")[0].at("name"), "1.weight");
  EXPECT_EQ(j.at("parameters")[0].at("shape"), json({300, 784}));

  EXPECT_EQ(j.at("input_shape"), json({1, 1, 28, 28}));  // the one image walked through
  // The hidden layers (784*300 + 300*100), not the classifier.
  EXPECT_EQ(j.at("targetable_weights"), 265200);
  EXPECT_EQ(j.at("targetable_layers"), json::parse(R"([{"name": "1", "shape": [300, 784]},
                                                       {"name": "3", "shape": [100, 300]}])"));

  const RunResult text = run("inspect --model mlp");
  EXPECT_EQ(text.code(), 0) << text.summary();
  EXPECT_NE(text.out.find("Linear(784 -> 300)"), std::string::npos) << text.out;
  const size_t total = text.out.find("\ntotal ");
  ASSERT_NE(total, std::string::npos) << text.out;
  const std::string total_row =
      text.out.substr(total + 1, text.out.find('\n', total + 1) - total - 1);
  EXPECT_TRUE(total_row.ends_with(" 266610")) << total_row;
  EXPECT_NE(text.out.find("targetable layers (targeted dropout and pruning apply here): 2 layers, "
                          "265200 of 266610 parameters"),
            std::string::npos)
      << text.out;
  // Layers inside nested containers are named by their path: resnet20's stages are 3 to 5.
  const RunResult nested = run("inspect --model resnet20 --json");
  ASSERT_EQ(nested.code(), 0) << nested.summary();
  const json walked = json::parse(nested.out);
  std::vector<std::string> names;
  for (const json& l : walked.at("layers")) names.push_back(l.at("name"));
  ASSERT_EQ(names.size(), 14u);
  EXPECT_EQ(names[3], "3.0");
  EXPECT_EQ(names[10], "5.1");
  // --list: one line per model of the zoo, with its summary.
  const RunResult list = run("inspect --list");
  EXPECT_EQ(list.code(), 0) << list.summary();
  for (const char* line : {"\nmlp ", "\nresnet32 ", "\nvgg16 ", "\ntransformer "})
    EXPECT_NE(("\n" + list.out).find(line), std::string::npos) << line << " in " << list.out;
  EXPECT_NE(list.out.find("LeNet-300-100: 784-300-100-10 fully connected"), std::string::npos)
      << list.out;
}

// The header of a CPU run names the BLAS kernels and threads (a seed's numbers depend on them):
// OpenBLAS's AVX2 kernels wherever the CPU has AVX2 and FMA, unless the user chose others. The
// header comes before the data is read, so a missing data directory is enough.
TEST_F(Cli, CpuRunsNameTheirBlasKernels) {
  const std::string args = "train --model mlp --device cpu --no-progress --data-dir " +
                           quote(tmp_.file("no-data")) + " --out " + quote(tmp_.file("run"));
  const RunResult own = run(args, "env -u OPENBLAS_CORETYPE");
  ASSERT_TRUE(own.exited()) << own.summary();
  EXPECT_EQ(own.code(), 1) << "no data: " << own.summary();
  EXPECT_NE(own.out.find("device cpu (OpenBLAS "), std::string::npos) << own.out;
  if (std::strstr(openblas_get_config(), "DYNAMIC_ARCH") == nullptr)
    GTEST_SKIP() << "this OpenBLAS is built for one CPU (" << openblas_get_config()
                 << "): its kernels cannot be chosen at run time";
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    EXPECT_NE(own.out.find("device cpu (OpenBLAS Haswell, "), std::string::npos) << own.out;
  }
#endif
  const RunResult chosen = run(args, "env OPENBLAS_CORETYPE=Prescott");
  EXPECT_NE(chosen.out.find("device cpu (OpenBLAS Prescott, "), std::string::npos)
      << "the user's OPENBLAS_CORETYPE wins: " << chosen.out;
}

TEST_F(Cli, TrainThenEvalAgree) {
  const std::string data = fashion_mnist_dir();
  if (data.empty()) GTEST_SKIP() << kNoFashionMnist;
  const std::string out = tmp_.file("run");
  const std::string png = tmp_.file("curves.png");
  const RunResult t = run("train --model mlp --epochs 2 --train-limit 3000 --device cpu "
                          "--no-progress --seed 5 --data-dir " + quote(data) + " --out " +
                          quote(out) + " --plot " + quote(png));
  ASSERT_TRUE(t.exited()) << t.summary();
  ASSERT_EQ(t.code(), 0) << t.summary();
  EXPECT_NE(t.out.find("epoch  2/2"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("final test accuracy"), std::string::npos) << t.out;
  EXPECT_TRUE(t.err.empty()) << "--no-progress writes nothing to stderr: " << t.err;
  std::ifstream metrics(out + "/metrics.jsonl");
  std::string line, last;
  int epochs = 0;
  for (; std::getline(metrics, line); ++epochs) last = line;
  ASSERT_EQ(epochs, 2) << "metrics.jsonl holds one line per epoch";
  const double trained_acc = json::parse(last).at("test_accuracy").get<double>();
  EXPECT_GT(trained_acc, 0.5) << "chance is 0.10";

  const RunResult e = run("eval --device cpu --json --data-dir " + quote(data) +
                          " --checkpoint " + quote(out + "/model.safetensors"));
  ASSERT_TRUE(e.exited()) << e.summary();
  ASSERT_EQ(e.code(), 0) << e.summary();
  json j;
  ASSERT_NO_THROW(j = json::parse(e.out)) << "--json must print one JSON object: " << e.out;
  EXPECT_EQ(j.at("model"), "mlp");
  EXPECT_EQ(j.at("count"), 10000);
  EXPECT_EQ(j.at("device"), "cpu");
  EXPECT_DOUBLE_EQ(j.at("accuracy").get<double>(), trained_acc);

  // --plot drew the curves: a PNG (its signature), and no temporary file left beside it.
  EXPECT_NE(t.out.find("plot written to " + png), std::string::npos) << t.out;
  std::ifstream f(png, std::ios::binary);
  char sig[8] = {};
  ASSERT_TRUE(f.read(sig, 8)) << png << " is missing or short";
  EXPECT_EQ(std::string(sig + 1, 3), "PNG");
  for (const auto& e : fs::directory_iterator(fs::path(png).parent_path()))
    EXPECT_EQ(e.path().filename().string().find("curves.png."), std::string::npos) << e.path();
}

// eval removes a targeted-dropout model's targeted set (prune's fraction gamma); --keep-all
// evaluates every weight (prune's fraction 0). The losses and sparsities must agree to the bit.
TEST_F(Cli, EvalKeepAllMatchesPruningNothing) {
  const std::string data = fashion_mnist_dir();
  if (data.empty()) GTEST_SKIP() << kNoFashionMnist;
  const std::string ckpt =
      quote(quick_checkpoint(data, " --td weight --td-gamma 0.75 --td-alpha 0.66"));
  auto json_of = [&](const std::string& args) {
    const RunResult r = run(args + " --device cpu --json --data-dir " + quote(data));
    EXPECT_EQ(r.status, 0) << r.summary();
    std::vector<json> lines;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
    return lines;
  };
  const auto removed = json_of("eval --checkpoint " + ckpt);
  const auto kept = json_of("eval --keep-all --checkpoint " + ckpt);
  const auto pruned = json_of("prune --fractions 0,0.75 --checkpoint " + ckpt);
  ASSERT_EQ(removed.size(), 1u);
  ASSERT_EQ(kept.size(), 1u);
  ASSERT_EQ(pruned.size(), 2u);
  EXPECT_EQ(kept[0].at("keep_all"), true);
  EXPECT_EQ(kept[0].at("loss").get<double>(), pruned[0].at("loss").get<double>());
  EXPECT_EQ(removed[0].at("loss").get<double>(), pruned[1].at("loss").get<double>());
  EXPECT_NE(kept[0].at("loss").get<double>(), removed[0].at("loss").get<double>());
  // Sparsity of the weights each evaluated: prune's at 0 and at 0.75.
  for (const char* key : {"sparsity_targeted", "sparsity_all"}) {
    EXPECT_EQ(kept[0].at(key).get<double>(), pruned[0].at(key).get<double>()) << key;
    EXPECT_EQ(removed[0].at(key).get<double>(), pruned[1].at(key).get<double>()) << key;
  }
  EXPECT_EQ(removed[0].at("sparsity_targeted").get<double>(), 0.75);
  EXPECT_EQ(removed[0].at("keep_all"), false);
  // Without --json, one line with the same numbers and which weights were evaluated.
  for (const bool keep_all : {false, true}) {
    const json& j = keep_all ? kept[0] : removed[0];
    const RunResult r = run(std::string("eval ") + (keep_all ? "--keep-all " : "") +
                            "--device cpu --data-dir " + quote(data) + " --checkpoint " + ckpt);
    EXPECT_EQ(r.status, 0) << r.summary();
    char numbers[200];
    std::snprintf(numbers, sizeof numbers,
                  "accuracy %.2f%%  loss %.4f  sparsity %.1f%% of targeted weights, %.1f%% of all",
                  100 * j.at("accuracy").get<double>(), j.at("loss").get<double>(),
                  100 * j.at("sparsity_targeted").get<double>(),
                  100 * j.at("sparsity_all").get<double>());
    EXPECT_NE(r.out.find(numbers), std::string::npos) << numbers << " in " << r.out;
    EXPECT_EQ(r.out.find(", all weights kept:") != std::string::npos, keep_all) << r.out;
  }
}

// eval on the GPU: the checkpoint's weights go to the device the batches are on, and the
// accuracy and loss are the CPU's up to the order of GEMM sums (a prediction or two may flip).
TEST_F(Cli, EvalOnCudaAgreesWithTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU: eval --device cuda not run";
  const std::string data = fashion_mnist_dir();
  if (data.empty()) GTEST_SKIP() << kNoFashionMnist;
  const std::string ckpt = quote(quick_checkpoint(data));
  auto eval_on = [&](const std::string& device) {
    const RunResult r = run("eval --json --device " + device + " --data-dir " + quote(data) +
                            " --checkpoint " + ckpt);
    EXPECT_EQ(r.status, 0) << r.summary();
    return json::parse(r.out);
  };
  const json cpu = eval_on("cpu"), gpu = eval_on("cuda");
  EXPECT_EQ(gpu.at("device"), "cuda");
  EXPECT_EQ(gpu.at("count"), cpu.at("count"));
  EXPECT_NEAR(gpu.at("accuracy").get<double>(), cpu.at("accuracy").get<double>(), 5e-4);
  EXPECT_NEAR(gpu.at("loss").get<double>(), cpu.at("loss").get<double>(),
              1e-4 * cpu.at("loss").get<double>());
}

// A checkpoint evaluated on a dataset of other images (an MLP of Fashion-MNIST on CIFAR-10) is
// refused naming both, before a layer meets inputs of the wrong size.
TEST_F(Cli, EvalRefusesADatasetTheCheckpointWasNotTrainedOn) {
  const std::string data = fashion_mnist_dir();
  if (data.empty()) GTEST_SKIP() << kNoFashionMnist;
  const std::string ckpt = quick_checkpoint(data);
  const std::string cifar = tmp_.file("cifar");
  fs::create_directories(cifar);
  std::ofstream(cifar + "/test_batch.bin", std::ios::binary) << std::string(4 * 3073, '\1');
  const RunResult r = run("eval --device cpu --dataset cifar10 --data-dir " + quote(cifar) +
                          " --checkpoint " + quote(ckpt));
  ASSERT_TRUE(r.exited()) << r.summary();
  EXPECT_EQ(r.code(), 1) << r.summary();
  for (const std::string& needle : {ckpt + " was trained on inputs [1, 28, 28]",
                                    std::string("cifar10 gives [3, 32, 32]")})
    EXPECT_NE(r.err.find(needle), std::string::npos) << needle << " in " << r.err;
}

TEST_F(Cli, FractionsWithTrailingTextNameTheItem) {
  // stod accepts a prefix of these; the error once came out empty ("tdrop: error: ").
  expect_clean_failure("prune --fractions " + quote("0.5 ") + " --device cpu --checkpoint x",
                       "--fractions: '0.5 '");
  expect_clean_failure("prune --fractions 0,0.5abc --device cpu --checkpoint x",
                       "--fractions: '0.5abc'");
  // Checked before any checkpoint is read: out of range, none at all, labels that do not pair.
  expect_clean_failure("prune --fractions 0.5,-0.1 --device cpu --checkpoint x",
                       "--fractions: -0.1 is outside [0, 1]");
  expect_clean_failure("prune --fractions " + quote("") + " --device cpu --checkpoint x",
                       "--fractions: no fractions given");
  expect_clean_failure("prune --device cpu --checkpoint x --label a --label b",
                       "--label: 2 labels for 1 checkpoints");
}

TEST_F(Cli, PruneCsvQuotesLabels) {
  const std::string data = fashion_mnist_dir();
  if (data.empty()) GTEST_SKIP() << kNoFashionMnist;
  const std::string ckpt = quick_checkpoint(data);
  // A label with a quote and a comma, or with a quote alone, must stay one column; a long one
  // must not cut the row (rows were once formatted into a 512-byte buffer).
  const std::vector<std::string> labels = {"run \"A\", lr=0.1", std::string(600, 'x'),
                                           "say \"hi\""};
  const std::string csv = tmp_.file("prune.csv");
  std::string args = "prune --device cpu --fractions 0,0.5 --data-dir " + quote(data) +
                     " --csv " + quote(csv);
  for (const std::string& label : labels)
    args += " --checkpoint " + quote(ckpt) + " --label " + quote(label);
  const RunResult r = run(args);
  ASSERT_EQ(r.status, 0) << r.summary();
  const std::vector<std::vector<std::string>> rows = parse_csv(read_file(csv));
  ASSERT_EQ(rows.size(), 7u) << read_file(csv);
  for (const auto& row : rows) ASSERT_EQ(row.size(), 9u) << read_file(csv);
  EXPECT_EQ(rows[0][1], "label");
  for (size_t i = 1; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i][0], ckpt);
    EXPECT_EQ(rows[i][1], labels[(i - 1) / 2]);
    EXPECT_EQ(rows[i][2], "weight");
    EXPECT_EQ(rows[i][3], i % 2 ? "0" : "0.5");
  }
  EXPECT_NE(read_file(csv).find("\"run \"\"A\"\", lr=0.1\""), std::string::npos)
      << "quotes are doubled inside a quoted field";
  EXPECT_NE(read_file(csv).find(",\"say \"\"hi\"\"\","), std::string::npos)
      << "a field with a quote and no comma is quoted too";
}

// Fractions that two decimals cannot tell apart keep their own rows in the table, and a label
// that is not UTF-8 (a file name may be any bytes) still gives JSON lines, not an exception
// after the sweep.
TEST_F(Cli, PruneTableAndJsonKeepCloseFractionsAndAnyLabel) {
  const std::string data = fashion_mnist_dir();
  if (data.empty()) GTEST_SKIP() << kNoFashionMnist;
  const std::string ckpt = quick_checkpoint(data);
  const std::string common = "prune --device cpu --fractions 0.99,0.995,1 --data-dir " +
                             quote(data) + " --checkpoint " + quote(ckpt);
  RunResult r = run(common);
  ASSERT_EQ(r.status, 0) << r.summary();
  std::vector<std::string> firsts;
  for (const std::string& line : lines_of(r.out))
    if (line.find('|') != std::string::npos) firsts.push_back(line.substr(0, line.find(' ')));
  EXPECT_EQ(firsts, (std::vector<std::string>{"fraction", "", "0.99", "0.995", "1.00"}))
      << r.out;
  r = run(common + " --json --label " + quote("run\xff"));
  ASSERT_EQ(r.status, 0) << r.summary();
  const std::vector<std::string> lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  for (const std::string& line : lines)
    EXPECT_EQ(json::parse(line).at("label").get<std::string>(), "run\xef\xbf\xbd") << line;
}

// The JSON lines, the CSV, the table and the plot's data of one sweep carry the same numbers in
// the same places: at 0.5 the targeted and all-weights sparsities, the accuracy and the loss
// all differ, so a swapped column shows. The plot's interpreter (TDROP_PYTHON) is replaced by
// one that keeps the data it is given and writes a stand-in PNG.
TEST_F(Cli, PruneTableCsvJsonAndPlotShowTheSameNumbers) {
  const std::string data = fashion_mnist_dir();
  if (data.empty()) GTEST_SKIP() << kNoFashionMnist;
  const std::string ckpt = quick_checkpoint(data);
  const std::string csv = tmp_.file("prune.csv"), png = tmp_.file("prune.png");
  const std::string seen = tmp_.file("plot-data.json"), python = tmp_.file("python.sh");
  {
    std::ofstream sh(python);
    sh << "#!/bin/sh\nexec python3 -c 'import json, sys\nd = json.load(sys.stdin)\n"
          "open(sys.argv[1], \"w\").write(json.dumps(d))\n"
          "open(d[\"out\"], \"wb\").write(b\"png\")' "
       << quote(seen) << "\n";
  }
  fs::permissions(python, fs::perms::owner_all);
  const ScopedEnv env("TDROP_PYTHON", python.c_str());
  const std::string common = "prune --device cpu --fractions 0,0.5 --data-dir " + quote(data) +
                             " --checkpoint " + quote(ckpt);
  const RunResult r = run(common + " --json --csv " + quote(csv) + " --plot " + quote(png));
  ASSERT_EQ(r.status, 0) << r.summary();
  std::vector<json> rows;
  for (const std::string& line : lines_of(r.out)) rows.push_back(json::parse(line));
  ASSERT_EQ(rows.size(), 2u) << r.out;
  const json& half = rows[1];
  const double targeted = half.at("sparsity_targeted"), all = half.at("sparsity_all");
  const double accuracy = half.at("accuracy"), loss = half.at("loss");
  EXPECT_EQ(targeted, 0.5);
  EXPECT_GT(all, 0.0);
  EXPECT_LT(all, targeted);  // the classifier keeps its weights
  EXPECT_NE(accuracy, targeted);
  EXPECT_NE(accuracy, all);
  auto fixed = [](const char* fmt, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, fmt, v);
    return std::string(buf);
  };
  // CSV: fraction, then the two sparsities, accuracy and loss.
  const std::vector<std::vector<std::string>> table = parse_csv(read_file(csv));
  ASSERT_EQ(table.size(), 3u) << read_file(csv);
  EXPECT_EQ(table[2], (std::vector<std::string>{ckpt, "run", "weight", "0.5",
                                                fixed("%.6f", targeted), fixed("%.6f", all),
                                                fixed("%.6f", accuracy), fixed("%.6f", loss),
                                                "0"}));
  // Plot: x is the targeted sparsity in %, y the accuracy in %.
  ASSERT_TRUE(fs::exists(png));
  const json plot = json::parse(read_file(seen));
  ASSERT_EQ(plot.at("series").size(), 1u);
  EXPECT_EQ(plot["series"][0].at("x"), json({0.0, 100 * targeted}));
  EXPECT_EQ(plot["series"][0].at("y"), json({100 * rows[0].at("accuracy").get<double>(),
                                             100 * accuracy}));
  // Table: the row of 0.5 as the prune command lays it out.
  const RunResult t = run(common);
  ASSERT_EQ(t.status, 0) << t.summary();
  char want[128];
  std::snprintf(want, sizeof want, "0.50      | %7.1f%% %7.1f%% %11.2f%%", 100 * targeted,
                100 * all, 100 * accuracy);
  EXPECT_NE(t.out.find(want), std::string::npos) << "no row \"" << want << "\" in\n" << t.out;
}

// prune and eval --bn-recalibrate on a model with batch norm: resnet20 trained one epoch on a tiny
// Fashion-MNIST written here (256 training and 64 test images, so the test is quick). The
// statistics are re-estimated (another loss than the checkpoint's own), the same way each run
// (a fixed shuffle), and the JSON and the table say so. Asking for more batches than the
// training set holds, or recalibrating a model without batch norm, is a clear error.
TEST_F(Cli, PruneRecalibratesBatchNormOnRequest) {
  const std::string data = tmp_.file("tiny-fashion");
  fs::create_directories(data);
  std::mt19937 rng(static_cast<unsigned>(fresh_seed()));
  write_fashion_mnist_split(data, "train", 256, rng);
  write_fashion_mnist_split(data, "t10k", 64, rng);
  const std::string run_dir = tmp_.file("r20");
  const RunResult t = run("train --model resnet20 --epochs 1 --device cpu --no-progress "
                          "--data-dir " + quote(data) + " --out " + quote(run_dir));
  ASSERT_EQ(t.status, 0) << t.summary();
  const std::string common = "prune --device cpu --fractions 0,0.5 --data-dir " + quote(data) +
                             " --checkpoint " + quote(run_dir + "/model.safetensors");
  auto losses = [&](const std::string& extra, int64_t batches) {
    const RunResult r = run(common + " --json" + extra);
    EXPECT_EQ(r.status, 0) << r.summary();
    std::vector<double> out;
    for (const std::string& line : lines_of(r.out)) {
      const json j = json::parse(line);
      EXPECT_EQ(j.at("bn_recalibrate_batches").get<int64_t>(), batches) << line;
      out.push_back(j.at("loss").get<double>());
    }
    EXPECT_EQ(out.size(), 2u) << r.out;
    return out;
  };
  const std::vector<double> kept = losses("", 0);
  const std::vector<double> recalibrated = losses(" --bn-recalibrate 2", 2);
  ASSERT_EQ(kept.size(), 2u);
  ASSERT_EQ(recalibrated.size(), 2u);
  for (size_t i = 0; i < 2; ++i) EXPECT_NE(kept[i], recalibrated[i]) << "fraction " << i;
  EXPECT_EQ(losses(" --bn-recalibrate 2", 2), recalibrated) << "not the same batches each run";
  // eval recalibrates the same way: its every-weight loss is prune's at fraction 0, to the bit.
  const RunResult ev = run("eval --device cpu --json --bn-recalibrate 2 --data-dir " +
                           quote(data) + " --checkpoint " + quote(run_dir + "/model.safetensors"));
  ASSERT_EQ(ev.status, 0) << ev.summary();
  const json e = json::parse(ev.out);
  EXPECT_EQ(e.at("bn_recalibrate_batches").get<int64_t>(), 2);
  EXPECT_EQ(e.at("loss").get<double>(), recalibrated[0]);
  const RunResult table = run(common + " --bn-recalibrate 1");
  ASSERT_EQ(table.status, 0) << table.summary();
  EXPECT_NE(table.out.find("batch norm re-estimated after pruning from 1 training batch of 128"),
            std::string::npos) << table.out;

  expect_clean_failure(common + " --bn-recalibrate 3",
                       "batch-norm recalibration: 3 batches asked, the data holds 2");
  const std::string real = fashion_mnist_dir();
  if (real.empty()) GTEST_SKIP() << kNoFashionMnist << " (for the model without batch norm)";
  const std::string mlp = quick_checkpoint(real);
  for (const char* command : {"prune", "eval"})
    expect_clean_failure(std::string(command) + " --device cpu --bn-recalibrate 1 --data-dir " +
                             quote(real) + " --checkpoint " + quote(mlp),
                         "(model mlp) has no batch-norm layer");
}

TEST_F(Cli, PlotFailureIsAnErrorNotASignal) {
  const std::string data = fashion_mnist_dir();
  if (data.empty()) GTEST_SKIP() << kNoFashionMnist;
  const std::string ckpt = quick_checkpoint(data);
  // A python that exits at once, and a payload bigger than a pipe's 64 KiB buffer: the write
  // hits a closed pipe, which once killed tdrop with SIGPIPE and left the script behind.
  const ScopedEnv python("TDROP_PYTHON", "false");
  const std::string png = tmp_.file("acc.png");
  // --json: no progress line on stderr before the error.
  expect_clean_failure("prune --json --device cpu --fractions 0 --data-dir " + quote(data) +
                           " --checkpoint " + quote(ckpt) + " --label " +
                           std::string(80000, 'x') + " --plot " + quote(png),
                       "plot: python3 with matplotlib failed to draw " + png, 1);
  EXPECT_FALSE(fs::exists(png));
  for (const std::string& name : tmp_.listing()) {
    EXPECT_EQ(name.find(".plot."), std::string::npos) << name;
    EXPECT_EQ(name.find(".tmp."), std::string::npos) << name;
  }
}

}  // namespace
}  // namespace tdrop
