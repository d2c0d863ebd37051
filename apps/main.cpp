// tdrop: train, evaluate and inspect sparse networks trained with targeted dropout.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "apps/blas_kernels.h"
#include "apps/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  tdrop::configure_blas(argv);
  CLI::App app{"tdrop: train sparse networks with targeted dropout (Gomez et al. 2019)"};
  app.name("tdrop");
  app.require_subcommand(1);
  app.set_version_flag("--version", "tdrop 0.1.0");
  app.footer(
      "Examples:\n"
      "  tdrop train --model mlp --td weight --td-gamma 0.75 --td-alpha 0.66 --out runs/mlp-td\n"
      "  tdrop prune --checkpoint runs/mlp-td/model.safetensors --mode weight \\\n"
      "              --fractions 0,0.5,0.75,0.9 --plot runs/prune.png\n"
      "  tdrop eval --checkpoint runs/mlp-td/model.safetensors\n"
      "  tdrop inspect --list\n"
      "Each subcommand's options: tdrop SUBCOMMAND --help");
  tdrop::add_train_command(app);
  tdrop::add_eval_command(app);
  tdrop::add_inspect_command(app);
  tdrop::add_prune_command(app);
  if (argc == 1) {  // no subcommand: the usage screen, not just CLI11's one-line complaint
    std::cerr << app.help();
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const tdrop::Error& e) {
    std::fprintf(stderr, "tdrop: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tdrop: unexpected error: %s\n", e.what());
    return 1;
  }
  return 0;
}
