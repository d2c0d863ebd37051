// Each subcommand registers its options and a callback that runs it.
#pragma once
#include <CLI/CLI.hpp>

#include <charconv>
#include <limits>
#include <string>

#include "models/batch_norm_recalibration.h"

namespace tdrop {
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_prune_command(CLI::App& app);

// A count, step or seed held in a T: digits only, within T's range. CLI11's NonNegativeNumber
// let "-1" through to an unsigned option as 2^64 - 1, and named a range up to DBL_MAX in its
// message.
template <class T>
CLI::Validator whole_number() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        T x{};
        const char* end = v.data() + v.size();
        const auto [ptr, ec] = std::from_chars(v.data(), end, x);
        const bool digits = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
        if (digits && ec == std::errc() && ptr == end) return "";
        return "must be a whole number from 0 to " +
               std::to_string(std::numeric_limits<T>::max()) + ", got '" + v + "'";
      },
      "");  // the option type (UINT, INT) says enough in --help
}

// --dataset and --data-dir, the same in every command that reads a dataset.
inline void add_dataset_options(CLI::App* cmd, std::string& dataset, std::string& data_dir) {
  cmd->add_option("--dataset", dataset, "dataset")
      ->check(CLI::IsMember({"fashion-mnist", "cifar10"}))
      ->capture_default_str();
  cmd->add_option("--data-dir", data_dir,
                  "directory with the dataset files (default: where the Debian package puts them)");
}

// --device, the same in every command that runs a model.
inline void add_device_option(CLI::App* cmd, std::string& device) {
  cmd->add_option("--device", device, "auto|cpu|cuda (auto: CUDA when a GPU is present)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
}

// --bn-recalibrate, the same in prune and eval; `when` says at which point it runs.
inline void add_bn_recalibrate_option(CLI::App* cmd, int64_t& batches, const std::string& when) {
  cmd->add_option("--bn-recalibrate", batches,
                  when + ", re-estimate batch-norm statistics from this many shuffled training "
                  "batches of " + std::to_string(kRecalibrationBatch) +
                  " (0: keep the checkpoint's)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
}
}  // namespace tdrop
