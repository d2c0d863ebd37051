// Accuracy-against-sparsity charts, drawn by matplotlib (Debian python3-matplotlib) in a child
// python3 process that reads the data as JSON on stdin.
#pragma once
#include <string>
#include <vector>

namespace tdrop {

struct PlotSeries {
  std::string label;
  std::vector<double> x, y;  // sparsity %, accuracy %
};

// Writes a PNG atomically; throws naming the file when python3/matplotlib fail.
void plot_accuracy_vs_sparsity(const std::string& png_path, const std::string& title,
                               const std::vector<PlotSeries>& series);

}  // namespace tdrop
