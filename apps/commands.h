// Each subcommand registers its options and a callback that runs it.
#pragma once
#include <CLI/CLI.hpp>

namespace tdrop {
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_prune_command(CLI::App& app);

// A count, step or seed: digits only. CLI11's NonNegativeNumber would let "-1" through to an
// unsigned option as 2^64 - 1, and names a range up to DBL_MAX in its message.
inline CLI::Validator whole_number() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        const bool digits = !v.empty() && v.size() <= 19 &&
                            v.find_first_not_of("0123456789") == std::string::npos;
        return digits ? "" : "must be a whole number (0 or more, at most 19 digits), got '" + v + "'";
      },
      "");  // the option type (UINT, INT) says enough in --help
}
}  // namespace tdrop
