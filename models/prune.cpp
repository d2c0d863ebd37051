#include "models/prune.h"

#include <cstdio>
#include <memory>

#include "core/autograd.h"
#include "data/datasets.h"
#include "kernels/targeted_dropout.h"
#include "models/batch_norm_recalibration.h"
#include "models/checkpoint.h"
#include "models/progress.h"
#include "models/registry.h"
#include "models/trainer.h"

namespace tdrop {

void prune_model(Module& model, TargetedDropoutConfig::Mode mode, double fraction) {
  TDROP_CHECK(fraction >= 0.0 && fraction <= 1.0, "prune: fraction ", fraction,
              " is outside [0, 1]");
  TDROP_CHECK(mode != TargetedDropoutConfig::Mode::None, "prune: mode must be weight or unit");
  NoGradGuard no_grad;
  configure_targeted_dropout(model, TargetedDropoutConfig{});  // use the weights as pruned
  for (auto& [name, layer] : targetable_layers(model)) {
    Tensor& w = layer->weight();
    const Tensor host = w.to(Device::CPU).contiguous();
    Tensor pruned = Tensor::empty(host.shape(), DType::F32, Device::CPU);
    const int64_t rows = host.size(0), n = rows ? host.numel() / rows : 0;
    std::vector<uint32_t> mask(static_cast<size_t>(rows * mask_words_per_row(n)));
    TdTask t;  // targeted dropout with alpha = 1 removes exactly the targeted set
    t.w = host.data<float>();
    t.w_out = pruned.data<float>();
    t.mask = mask.data();
    t.rows = rows;
    t.n = n;
    t.unit = mode == TargetedDropoutConfig::Mode::Unit;
    t.k = td_count(fraction, t.unit ? rows : n);
    t.drop_threshold = bernoulli_threshold(1.0f);
    t.name = name;
    targeted_dropout_cpu(t, 0);
    Tensor dst = w;
    dst.copy_(pruned);
  }
}

std::vector<PruneRow> prune_sweep(const std::string& checkpoint, const PruneOptions& opt) {
  const Device device = parse_device(opt.device);
  const DatasetSpec& spec = find_dataset(opt.dataset);
  const Checkpoint first = load_checkpoint(checkpoint);
  ImageDataset test =
      load_dataset(opt.dataset, opt.data_dir, "test", find_model(first.model_name).input_size);
  check_checkpoint_fits(first, checkpoint, test, opt.dataset);
  BatchLoader loader(test, 1000, false, 0, device, spec.mean, spec.std);
  std::unique_ptr<BatchLoader> calibration;
  if (opt.bn_recalibrate_batches > 0)
    calibration = recalibration_data(opt.dataset, opt.data_dir, first.model_name, device);
  std::vector<PruneRow> rows;
  ProgressLine progress(opt.progress);
  for (size_t i = 0; i < opt.fractions.size(); ++i) {
    Checkpoint ck = load_checkpoint(checkpoint);
    prune_model(*ck.model, opt.mode, opt.fractions[i]);
    ck.model->to(device);
    if (calibration)
      recalibrate_checkpoint(*ck.model, checkpoint, ck.model_name, *calibration,
                             opt.bn_recalibrate_batches);
    const EvalResult ev = evaluate(*ck.model, loader);
    const SparsityReport sp = measure_sparsity(*ck.model);
    rows.push_back({opt.fractions[i], sp.targeted(), sp.all(), ev.accuracy, ev.loss});
    progress.update("prune " + checkpoint, static_cast<long>(i + 1),
                    static_cast<long>(opt.fractions.size()), "");
  }
  progress.finish();
  return rows;
}

}  // namespace tdrop
