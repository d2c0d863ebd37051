// Post-hoc magnitude pruning: remove a fraction of every targetable layer's weights (per row by
// |w| in weight mode, whole rows by L2 norm in unit mode), with the same selection rule as
// targeted dropout, and measure what is left.
#pragma once
#include <string>
#include <vector>

#include "layers/module.h"
#include "layers/targeted.h"

namespace tdrop {

// Zeroes floor(fraction * n) entries of each row (weight) or floor(fraction * rows) rows (unit)
// of every targetable layer, and turns targeted dropout off so the model is used as pruned.
void prune_model(Module& model, TargetedDropoutConfig::Mode mode, double fraction);

struct PruneRow {
  double fraction = 0, sparsity_targeted = 0, sparsity_all = 0, accuracy = 0, loss = 0;
};

struct PruneOptions {
  TargetedDropoutConfig::Mode mode = TargetedDropoutConfig::Mode::Weight;
  std::vector<double> fractions{0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99};
  std::string dataset = "fashion-mnist", data_dir, device = "auto";
  bool progress = true;
  // After pruning, re-estimate batch-norm statistics from this many training batches
  // (recalibration_data; 0: keep the checkpoint's). An error for a model without batch norm.
  int64_t bn_recalibrate_batches = 0;
};

// Loads `checkpoint` once per fraction, prunes it, evaluates test accuracy.
std::vector<PruneRow> prune_sweep(const std::string& checkpoint, const PruneOptions& opt);

}  // namespace tdrop
