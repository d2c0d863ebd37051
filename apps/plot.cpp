#include "apps/plot.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"

namespace tdrop {

namespace {
const char* kSparsityScript = R"PY(
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

const char* kCurvesScript = R"PY(
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
d = json.load(sys.stdin)
e = d["epochs"]
x = [r["epoch"] for r in e]
fig, (loss, acc) = plt.subplots(1, 2, figsize=(10.0, 4.0), dpi=120)
loss.plot(x, [r["train_loss"] for r in e], marker="o", label="train")
loss.plot(x, [r["test_loss"] for r in e], marker="o", label="test")
loss.set_xlabel("epoch")
loss.set_ylabel("cross-entropy loss")
acc.plot(x, [100 * r["train_accuracy"] for r in e], marker="o", label="train accuracy")
acc.plot(x, [100 * r["test_accuracy"] for r in e], marker="o", label="test accuracy")
if any(r.get("sparsity_targeted", 0) > 0 for r in e):
    acc.plot(x, [100 * r["sparsity_targeted"] for r in e], linestyle="--",
             label="targeted weights removed in eval")
acc.set_xlabel("epoch")
acc.set_ylabel("%")
for ax in (loss, acc):
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend()
fig.suptitle(d["title"])
fig.tight_layout()
fig.savefig(d["out"], format="png")
)PY";

// Quotes a string for /bin/sh: inside single quotes everything is literal but the quote itself.
std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Removes the files it names when it goes out of scope, so neither the script nor a half-drawn
// PNG outlives a failure (and the script does not outlive success).
struct RemoveOnExit {
  std::vector<std::string> paths;
  ~RemoveOnExit() {
    for (const std::string& p : paths) std::remove(p.c_str());
  }
};

// Ignores SIGPIPE while it lives, then restores the previous handler: a python3 that exits before
// reading all of stdin (no matplotlib, a bad TDROP_PYTHON) must fail the write, not kill tdrop.
class SigpipeIgnored {
 public:
  SigpipeIgnored() {
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    ::sigaction(SIGPIPE, &ignore, &previous_);
  }
  ~SigpipeIgnored() { ::sigaction(SIGPIPE, &previous_, nullptr); }
  SigpipeIgnored(const SigpipeIgnored&) = delete;
  SigpipeIgnored& operator=(const SigpipeIgnored&) = delete;

 private:
  struct sigaction previous_ {};
};

void write_script(const std::string& path, const char* script) {
  FILE* f = std::fopen(path.c_str(), "w");
  TDROP_CHECK(f, "plot: cannot write ", path);
  const bool written = std::fputs(script, f) >= 0;
  TDROP_CHECK(std::fclose(f) == 0 && written, "plot: cannot write ", path);
}

// TDROP_PYTHON overrides; else Debian's interpreter (where python3-matplotlib installs), else
// whatever python3 is first on PATH.
std::string python_interpreter() {
  const char* env = std::getenv("TDROP_PYTHON");
  if (env && *env) return env;
  return ::access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

// Runs `cmd` with `payload` on stdin; true when all of it was written and the command exited 0.
bool run_with_stdin(const std::string& cmd, const std::string& payload) {
  // Started before SIGPIPE is ignored: an ignored signal stays ignored across exec.
  FILE* p = ::popen(cmd.c_str(), "w");
  if (!p) return false;
  const SigpipeIgnored guard;  // through pclose too, which flushes what a failed write left
  // A short write (EPIPE once the reader is gone) shows in fwrite's count or in the flush.
  const bool written = std::fwrite(payload.data(), 1, payload.size(), p) == payload.size() &&
                       std::fflush(p) == 0;
  const int status = ::pclose(p);
  return written && status == 0;
}

// Runs `script` with `data` (plus the temp output path) on stdin, then puts the PNG in place as
// every result file is (fsync'ed, then renamed over the old one).
void draw(const std::string& png_path, const char* script, nlohmann::json data) {
  const std::string tmp = png_path + ".tmp." + std::to_string(::getpid());
  data["out"] = tmp;
  // The script travels as an argument, the data on stdin.
  const std::string script_path = png_path + ".plot." + std::to_string(::getpid()) + ".py";
  const RemoveOnExit cleanup{{script_path, tmp}};
  write_script(script_path, script);
  const std::string cmd = shell_quote(python_interpreter()) + " " + shell_quote(script_path);
  // Labels and titles may hold any bytes: those that are not UTF-8 go as U+FFFD.
  const std::string payload = data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  TDROP_CHECK(run_with_stdin(cmd, payload), "plot: python3 with matplotlib failed to draw ",
              png_path, " (install the Debian package python3-matplotlib)");
  write_file_atomic(png_path, read_file(tmp));
}
}  // namespace

void plot_accuracy_vs_sparsity(const std::string& png_path, const std::string& title,
                               const std::vector<PlotSeries>& series) {
  nlohmann::json d;
  d["title"] = title;
  d["series"] = nlohmann::json::array();
  for (const PlotSeries& s : series) d["series"].push_back({{"label", s.label}, {"x", s.x}, {"y", s.y}});
  draw(png_path, kSparsityScript, std::move(d));
}

void plot_training_curves(const std::string& png_path, const std::string& title,
                          const std::vector<nlohmann::json>& epochs) {
  TDROP_CHECK(!epochs.empty(), "plot: no epochs to draw into ", png_path);
  nlohmann::json d;
  d["title"] = title;
  d["epochs"] = epochs;
  draw(png_path, kCurvesScript, std::move(d));
}

}  // namespace tdrop
