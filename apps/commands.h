// Each subcommand registers its options and a callback that runs it.
#pragma once
#include <CLI/CLI.hpp>

namespace tdrop {
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_prune_command(CLI::App& app);
}  // namespace tdrop
