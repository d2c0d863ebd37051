#include "models/batch_norm_recalibration.h"

#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "data/datasets.h"
#include "layers/batch_norm.h"
#include "models/registry.h"

namespace tdrop {

namespace {

void find_batch_norms(Module& m, std::vector<BatchNorm2d*>& out) {
  if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) out.push_back(bn);
  for (const auto& [name, child] : m.children()) find_batch_norms(*child, out);
}

}  // namespace

int recalibrate_batch_norm(Module& model, BatchLoader& data, int64_t batches) {
  TDROP_CHECK(batches >= 1 && batches <= data.num_batches(), "batch-norm recalibration: ",
              batches, " batches asked, the data holds ", data.num_batches());
  std::vector<BatchNorm2d*> norms;
  find_batch_norms(model, norms);
  if (norms.empty()) return 0;
  std::vector<double> momenta;
  for (BatchNorm2d* bn : norms) momenta.push_back(bn->momentum());
  NoGradGuard no_grad;
  model.eval();
  for (BatchNorm2d* bn : norms) {
    bn->reset_running_stats();
    bn->train(true);
  }
  data.start_epoch(0);
  for (int64_t b = 0; b < batches; ++b) {
    // Batch b enters with weight 1/(b+1): after it, the statistics are the mean over b+1.
    for (BatchNorm2d* bn : norms) bn->set_momentum(1.0 / static_cast<double>(b + 1));
    model.forward(data.batch(b).images);
  }
  for (size_t i = 0; i < norms.size(); ++i) {
    norms[i]->set_momentum(momenta[i]);
    norms[i]->eval();
  }
  return static_cast<int>(norms.size());
}

std::unique_ptr<BatchLoader> recalibration_data(const std::string& dataset,
                                                const std::string& data_dir,
                                                const std::string& model_name, Device device) {
  const DatasetSpec& spec = find_dataset(dataset);
  // The loader keeps its own normalised copy of the pixels.
  const ImageDataset train =
      load_dataset(dataset, data_dir, "train", find_model(model_name).input_size);
  return std::make_unique<BatchLoader>(train, kRecalibrationBatch, /*shuffle=*/true, 0, device,
                                       spec.mean, spec.std);
}

void recalibrate_checkpoint(Module& model, const std::string& checkpoint,
                            const std::string& model_name, BatchLoader& data, int64_t batches) {
  TDROP_CHECK(recalibrate_batch_norm(model, data, batches) > 0, "--bn-recalibrate: ", checkpoint,
              " (model ", model_name, ") has no batch-norm layer");
}

}  // namespace tdrop
