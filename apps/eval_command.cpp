#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "data/datasets.h"
#include "layers/targeted.h"
#include "models/checkpoint.h"
#include "models/registry.h"
#include "models/trainer.h"

namespace tdrop {

void add_eval_command(CLI::App& app) {
  struct Opts {
    std::string checkpoint, dataset = "fashion-mnist", data_dir, device = "auto";
    bool json = false, keep_all = false;
    int64_t bn_batches = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("eval", "test accuracy of a checkpoint");
  cmd->add_option("--checkpoint", o->checkpoint, "model.safetensors written by tdrop train")
      ->required();
  add_dataset_options(cmd, o->dataset, o->data_dir);
  add_device_option(cmd, o->device);
  cmd->add_flag("--keep-all", o->keep_all,
                "keep every weight (a model trained with targeted dropout otherwise removes its "
                "targeted set in eval, at the final gamma)");
  add_bn_recalibrate_option(cmd, o->bn_batches, "before evaluating");
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->callback([o] {
    const Device d = parse_device(o->device);
    Checkpoint ck = load_checkpoint(o->checkpoint);
    if (o->keep_all && ck.model_config.contains("td")) {
      TargetedDropoutConfig td = td_config_from_json(ck.model_config["td"]);
      td.keep_all_in_eval = true;
      configure_targeted_dropout(*ck.model, td);
    }
    ck.model->to(d);
    const DatasetSpec& spec = find_dataset(o->dataset);
    ImageDataset test =
        load_dataset(o->dataset, o->data_dir, "test", find_model(ck.model_name).input_size);
    check_checkpoint_fits(ck, o->checkpoint, test, o->dataset);
    BatchLoader loader(test, 1000, false, 0, d, spec.mean, spec.std);
    if (o->bn_batches > 0)
      recalibrate_checkpoint(*ck.model, o->checkpoint, ck.model_name,
                             *recalibration_data(o->dataset, o->data_dir, ck.model_name, d),
                             o->bn_batches);
    const EvalResult r = evaluate(*ck.model, loader);
    const SparsityReport sp = measure_sparsity(*ck.model);  // of the weights evaluated
    if (o->json) {
      nlohmann::json j = {{"checkpoint", o->checkpoint},
                          {"model", ck.model_name},
                          {"dataset", o->dataset},
                          {"device", device_name(d)},
                          {"count", r.count},
                          {"loss", r.loss},
                          {"accuracy", r.accuracy},
                          {"keep_all", o->keep_all},
                          {"bn_recalibrate_batches", o->bn_batches},
                          {"sparsity_targeted", sp.targeted()},
                          {"sparsity_all", sp.all()}};
      // A path may hold any bytes: those that are not UTF-8 print as U+FFFD.
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      const std::string recalibrated =
          o->bn_batches > 0
              ? ", batch norm re-estimated from " + std::to_string(o->bn_batches) + " batches"
              : "";
      std::printf("%s (%s) on %s test, %lld images, %s%s%s: accuracy %.2f%%  loss %.4f  "
                  "sparsity %.1f%% of targeted weights, %.1f%% of all\n",
                  o->checkpoint.c_str(), ck.model_name.c_str(), o->dataset.c_str(),
                  static_cast<long long>(r.count), device_name(d),
                  o->keep_all ? ", all weights kept" : "", recalibrated.c_str(), 100 * r.accuracy,
                  r.loss, 100 * sp.targeted(), 100 * sp.all());
    }
  });
}

}  // namespace tdrop
