// Each subcommand registers its options and a callback that runs it.
#pragma once
#include <CLI/CLI.hpp>

#include <charconv>
#include <limits>
#include <string>

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
}  // namespace tdrop
