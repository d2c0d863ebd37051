// Charts drawn by matplotlib (Debian python3-matplotlib) in a child python3 process that reads
// the data as JSON on stdin: accuracy against sparsity (tdrop prune --plot) and a run's training
// curves (tdrop train --plot).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace tdrop {

struct PlotSeries {
  std::string label;
  std::vector<double> x, y;  // sparsity %, accuracy %
};

// Each writes a PNG atomically and throws naming the file when python3/matplotlib fail.
void plot_accuracy_vs_sparsity(const std::string& png_path, const std::string& title,
                               const std::vector<PlotSeries>& series);
// `epochs` are the JSON lines of a run's metrics.jsonl (epoch, train/test loss and accuracy,
// sparsity of targeted weights): loss in one panel, accuracy and sparsity in the other.
void plot_training_curves(const std::string& png_path, const std::string& title,
                          const std::vector<nlohmann::json>& epochs);

}  // namespace tdrop
