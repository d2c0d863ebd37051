#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "core/autograd.h"
#include "layers/sequential.h"
#include "layers/targeted.h"
#include "models/registry.h"

namespace tdrop {

namespace {

struct Row {
  std::string name, layer;
  Shape out_shape;
  int64_t params;
};

// Runs a one-image forward pass, recording each leaf layer's output shape and parameters.
Tensor walk(Module& m, const std::string& name, const Tensor& x, std::vector<Row>& rows) {
  if (dynamic_cast<Sequential*>(&m)) {
    Tensor h = x;
    for (auto& [child_name, child] : m.children())
      h = walk(*child, name.empty() ? child_name : name + "." + child_name, h, rows);
    return h;
  }
  Tensor y = m.forward(x);
  rows.push_back({name, m.describe(), y.shape(), m.num_parameters()});
  return y;
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  struct Opts {
    std::string model = "mlp";
    bool json = false, list = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("inspect", "layers, output shapes and parameter counts of a model");
  cmd->add_option("--model", o->model, "model name")
      ->check(CLI::IsMember(model_names()))
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->add_flag("--list", o->list, "list the models of the zoo");
  cmd->callback([o] {
    if (o->list) {
      for (const std::string& n : model_names())
        std::printf("%-14s %s\n", n.c_str(), find_model(n).summary.c_str());
      return;
    }
    nlohmann::json cfg = nlohmann::json::object();
    auto model = build_model(o->model, cfg);
    model->eval();
    Shape in{1};
    for (int64_t d : cfg.value("input_shape", std::vector<int64_t>{1, 28, 28})) in.push_back(d);
    std::vector<Row> rows;
    NoGradGuard no_grad;
    walk(*model, "", Tensor::zeros(in), rows);
    const int64_t total = model->num_parameters();
    // Targetable layers (every Conv2d/Linear but the stem and the classifier, by default).
    const auto targetable = targetable_layers(*model);
    int64_t targetable_weights = 0;
    for (auto& [n, l] : targetable) targetable_weights += l->weight().numel();
    if (o->json) {
      nlohmann::json layers = nlohmann::json::array();
      for (const Row& r : rows)
        layers.push_back({{"name", r.name}, {"layer", r.layer}, {"output_shape", r.out_shape},
                          {"parameters", r.params}});
      nlohmann::json params = nlohmann::json::array();
      for (auto& [n, t] : model->named_parameters())
        params.push_back({{"name", n}, {"shape", t.shape()}, {"count", t.numel()}});
      std::printf("%s\n", nlohmann::json{{"model", o->model},
                                         {"config", cfg},
                                         {"input_shape", in},
                                         {"layers", layers},
                                         {"parameters", params},
                                         {"targetable_layers", [&] {
                                            nlohmann::json t = nlohmann::json::array();
                                            for (auto& [n, l] : targetable)
                                              t.push_back({{"name", n},
                                                           {"shape", l->weight().shape()}});
                                            return t;
                                          }()},
                                         {"targetable_weights", targetable_weights},
                                         {"total_parameters", total}}
                              .dump(2)
                              .c_str());
      return;
    }
    std::printf("%s: %s\ninput %s\n\n", o->model.c_str(), find_model(o->model).summary.c_str(),
                shape_str(in).c_str());
    std::printf("%-8s %-28s %-18s %12s\n", "name", "layer", "output", "parameters");
    for (const Row& r : rows)
      std::printf("%-8s %-28s %-18s %12lld\n", r.name.c_str(), r.layer.c_str(),
                  shape_str(r.out_shape).c_str(), static_cast<long long>(r.params));
    std::printf("\n%-8s %-28s %-18s %12lld\n", "total", "", "", static_cast<long long>(total));
    std::printf("\nparameters:\n");
    for (auto& [n, t] : model->named_parameters())
      std::printf("  %-28s %-18s %10lld\n", n.c_str(), shape_str(t.shape()).c_str(),
                  static_cast<long long>(t.numel()));
    std::printf("\ntargetable layers (targeted dropout and pruning apply here): %zu layers, "
                "%lld of %lld parameters\n",
                targetable.size(), static_cast<long long>(targetable_weights),
                static_cast<long long>(total));
    for (auto& [n, l] : targetable)
      std::printf("  %-28s %s\n", n.c_str(), shape_str(l->weight().shape()).c_str());
  });
}

}  // namespace tdrop
