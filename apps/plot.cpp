#include "apps/plot.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace tdrop {

namespace {
const char* kScript = R"PY(
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
d = json.load(sys.stdin)
fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
for s in d["series"]:
    ax.plot(s["x"], s["y"], marker="o", label=s["label"])
ax.set_xlabel("sparsity of targeted weights (%)")
ax.set_ylabel("test accuracy (%)")
ax.set_title(d["title"])
ax.grid(True, alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(d["out"], format="png")
)PY";
}  // namespace

void plot_accuracy_vs_sparsity(const std::string& png_path, const std::string& title,
                               const std::vector<PlotSeries>& series) {
  nlohmann::json d;
  const std::string tmp = png_path + ".tmp." + std::to_string(::getpid());
  d["out"] = tmp;
  d["title"] = title;
  d["series"] = nlohmann::json::array();
  for (const PlotSeries& s : series) d["series"].push_back({{"label", s.label}, {"x", s.x}, {"y", s.y}});
  // The script travels as an argument, the data on stdin.
  const std::string script_path = png_path + ".plot." + std::to_string(::getpid()) + ".py";
  FILE* sf = std::fopen(script_path.c_str(), "w");
  TDROP_CHECK(sf, "plot: cannot write ", script_path);
  std::fputs(kScript, sf);
  std::fclose(sf);
  // TDROP_PYTHON overrides; else Debian's interpreter (where python3-matplotlib installs), else
  // whatever python3 is first on PATH.
  const char* env = std::getenv("TDROP_PYTHON");
  const std::string python = env && *env ? env : (::access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3");
  const std::string cmd = python + " '" + script_path + "'";
  FILE* p = ::popen(cmd.c_str(), "w");
  if (!p) {
    std::remove(script_path.c_str());
    fail("plot: cannot start python3 to draw ", png_path);
  }
  const std::string payload = d.dump();
  std::fwrite(payload.data(), 1, payload.size(), p);
  const int status = ::pclose(p);
  std::remove(script_path.c_str());
  if (status != 0) {
    std::remove(tmp.c_str());
    fail("plot: python3 with matplotlib failed to draw ", png_path,
         " (install the Debian package python3-matplotlib)");
  }
  TDROP_CHECK(std::rename(tmp.c_str(), png_path.c_str()) == 0, "plot: cannot rename ", tmp, " to ",
              png_path);
}

}  // namespace tdrop
