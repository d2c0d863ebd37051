#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/commands.h"
#include "apps/plot.h"
#include "core/atomic_file.h"
#include "models/prune.h"

namespace tdrop {

namespace {

std::vector<double> parse_fractions(const std::string& s) {
  std::vector<double> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const double f = std::stod(item, &used);
      // stod stops at the first character it cannot use; trailing text ("0.5abc", "0.5 ") is a
      // typo, not a fraction.
      TDROP_CHECK(used == item.size(), "--fractions: '", item, "' is not a number");
      TDROP_CHECK(f >= 0.0 && f <= 1.0, "--fractions: ", f, " is outside [0, 1]");
      out.push_back(f);
    } catch (const std::logic_error&) {
      fail("--fractions: '", item, "' is not a number");
    }
  }
  TDROP_CHECK(!out.empty(), "--fractions: no fractions given");
  return out;
}

// A fraction as the table shows it: two decimals where they say it exactly (0.25, 0.90), else
// as many as it needs (0.995 is not 0.99 or 1.00).
std::string fraction_label(double f) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", f);
  if (std::strtod(buf, nullptr) != f) std::snprintf(buf, sizeof buf, "%.10g", f);
  return buf;
}

// "runs/mlp-td/model.safetensors" -> "mlp-td".
std::string default_label(const std::string& path) {
  const std::filesystem::path p(path);
  const std::string parent = p.parent_path().filename().string();
  return parent.empty() ? p.stem().string() : parent;
}

// One CSV field per RFC 4180: a label or path with a comma, quote or line break is quoted, its
// quotes doubled, so it stays one column when read back.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// printf-style formatting of one number, sized to fit (a huge loss prints in full, not cut).
std::string format_number(const char* fmt, double v) {
  const int n = std::snprintf(nullptr, 0, fmt, v);
  std::string s(static_cast<size_t>(n), '\0');
  std::snprintf(s.data(), s.size() + 1, fmt, v);
  return s;
}

// checkpoint,label,mode,fraction,sparsity_targeted,sparsity_all,accuracy,loss,
// bn_recalibrate_batches
std::string csv_row(const std::string& checkpoint, const std::string& label,
                    const std::string& mode, const PruneRow& r, int64_t bn_batches) {
  return csv_field(checkpoint) + "," + csv_field(label) + "," + csv_field(mode) + "," +
         format_number("%g", r.fraction) + "," + format_number("%.6f", r.sparsity_targeted) +
         "," + format_number("%.6f", r.sparsity_all) + "," + format_number("%.6f", r.accuracy) +
         "," + format_number("%.6f", r.loss) + "," + std::to_string(bn_batches) + "\n";
}

}  // namespace

void add_prune_command(CLI::App& app) {
  struct Opts {
    std::vector<std::string> checkpoints, labels;
    std::string mode = "weight", fractions = "0,0.25,0.5,0.75,0.9,0.95,0.99", csv, plot;
    std::string dataset = "fashion-mnist", data_dir, device = "auto";
    bool json = false;
    int64_t bn_batches = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "prune", "prune every targetable layer by each fraction and measure test accuracy");
  cmd->add_option("--checkpoint", o->checkpoints, "model.safetensors (repeat to compare runs)")
      ->required();
  cmd->add_option("--label", o->labels, "legend name per checkpoint (default: its directory)");
  cmd->add_option("--mode", o->mode, "weight: per row by |w|; unit: whole rows by L2 norm")
      ->check(CLI::IsMember({"weight", "unit"}))
      ->capture_default_str();
  cmd->add_option("--fractions", o->fractions, "comma-separated fractions in [0, 1]")
      ->capture_default_str();
  add_bn_recalibrate_option(cmd, o->bn_batches, "after pruning");
  add_dataset_options(cmd, o->dataset, o->data_dir);
  add_device_option(cmd, o->device);
  cmd->add_flag("--json", o->json, "print one JSON object per (checkpoint, fraction)");
  cmd->add_option("--csv", o->csv, "also write the table as CSV to this file");
  cmd->add_option("--plot", o->plot, "draw accuracy against sparsity into this PNG");
  cmd->callback([o] {
    TDROP_CHECK(o->labels.empty() || o->labels.size() == o->checkpoints.size(), "--label: ",
                o->labels.size(), " labels for ", o->checkpoints.size(), " checkpoints");
    PruneOptions po;
    po.mode = parse_td_mode(o->mode);
    po.fractions = parse_fractions(o->fractions);
    po.dataset = o->dataset;
    po.data_dir = o->data_dir;
    po.device = o->device;
    po.progress = !o->json;
    po.bn_recalibrate_batches = o->bn_batches;
    std::vector<std::vector<PruneRow>> results;
    std::vector<std::string> labels;
    for (size_t i = 0; i < o->checkpoints.size(); ++i) {
      results.push_back(prune_sweep(o->checkpoints[i], po));
      labels.push_back(o->labels.empty() ? default_label(o->checkpoints[i]) : o->labels[i]);
    }
    if (o->json) {
      // Labels and paths may hold any bytes: those that are not UTF-8 print as U+FFFD.
      constexpr auto kReplace = nlohmann::json::error_handler_t::replace;
      for (size_t i = 0; i < results.size(); ++i)
        for (const PruneRow& r : results[i])
          std::printf("%s\n", nlohmann::json{{"checkpoint", o->checkpoints[i]},
                                             {"label", labels[i]},
                                             {"mode", o->mode},
                                             {"fraction", r.fraction},
                                             {"sparsity_targeted", r.sparsity_targeted},
                                             {"sparsity_all", r.sparsity_all},
                                             {"accuracy", r.accuracy},
                                             {"loss", r.loss},
                                             {"bn_recalibrate_batches", o->bn_batches}}
                                  .dump(-1, ' ', false, kReplace)
                                  .c_str());
    } else {
      std::printf("%s pruning on %s test (sparsity: of targeted weights / of all weights)\n",
                  o->mode.c_str(), o->dataset.c_str());
      if (o->bn_batches > 0)
        std::printf("batch norm re-estimated after pruning from %lld training %s of %lld\n",
                    static_cast<long long>(o->bn_batches), o->bn_batches == 1 ? "batch" : "batches",
                    static_cast<long long>(kRecalibrationBatch));
      std::printf("\n");
      std::printf("%-9s", "fraction");
      for (const std::string& l : labels) std::printf(" | %-30.30s", l.c_str());
      std::printf("\n%-9s", "");
      for (size_t i = 0; i < labels.size(); ++i)
        std::printf(" | %8s %8s %12s", "targeted", "all", "accuracy");
      std::printf("\n");
      for (size_t f = 0; f < po.fractions.size(); ++f) {
        std::printf("%-9s", fraction_label(po.fractions[f]).c_str());
        for (const auto& rows : results)
          std::printf(" | %7.1f%% %7.1f%% %11.2f%%", 100 * rows[f].sparsity_targeted,
                      100 * rows[f].sparsity_all, 100 * rows[f].accuracy);
        std::printf("\n");
      }
    }
    if (!o->csv.empty()) {
      std::string csv =
          "checkpoint,label,mode,fraction,sparsity_targeted,sparsity_all,accuracy,loss,"
          "bn_recalibrate_batches\n";
      for (size_t i = 0; i < results.size(); ++i)
        for (const PruneRow& r : results[i])
          csv += csv_row(o->checkpoints[i], labels[i], o->mode, r, o->bn_batches);
      write_file_atomic(o->csv, csv);
    }
    if (!o->plot.empty()) {
      std::vector<PlotSeries> series;
      for (size_t i = 0; i < results.size(); ++i) {
        PlotSeries s{labels[i], {}, {}};
        for (const PruneRow& r : results[i]) {
          s.x.push_back(100 * r.sparsity_targeted);
          s.y.push_back(100 * r.accuracy);
        }
        series.push_back(s);
      }
      plot_accuracy_vs_sparsity(o->plot, o->mode + " pruning, " + o->dataset, series);
      if (!o->json) std::printf("\nplot written to %s\n", o->plot.c_str());
    }
  });
}

}  // namespace tdrop
