// Re-estimating batch-norm statistics after the weights change. A layer's running mean and
// variance describe the activations of the weights it was trained with; a pruned model, or one
// trained with targeted dropout ramped to 99 %, meets different ones at evaluation; a few
// training batches through the network as it now is give statistics that fit it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "data/loader.h"
#include "layers/module.h"

namespace tdrop {

// Sets the running mean and variance of every BatchNorm2d of `model` to the plain average, over
// the first `batches` batches of `data` (epoch 0), of each batch's mean and unbiased variance
// (PyTorch's momentum=None). Every other layer runs as in evaluation (no dropout; a targeted
// layer removes its targeted set), no parameter changes, and the model is left in eval mode with
// each layer's momentum as it was (after an error, in no defined state). Returns how many
// BatchNorm2d layers it recalibrated.
int recalibrate_batch_norm(Module& model, BatchLoader& data, int64_t batches);

// What `tdrop prune` and `tdrop eval` recalibrate from: the training split of `dataset`, shaped
// for zoo model `model_name`, shuffled (a fixed seed), in batches of kRecalibrationBatch.
constexpr int64_t kRecalibrationBatch = 128;
std::unique_ptr<BatchLoader> recalibration_data(const std::string& dataset,
                                                const std::string& data_dir,
                                                const std::string& model_name, Device device);
// recalibrate_batch_norm, with an error naming `checkpoint` when its model has no batch norm.
void recalibrate_checkpoint(Module& model, const std::string& checkpoint,
                            const std::string& model_name, BatchLoader& data, int64_t batches);

}  // namespace tdrop
