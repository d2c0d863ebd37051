#include "models/progress.h"

#include <unistd.h>

#include <cmath>

namespace tdrop {

ProgressLine::ProgressLine(bool enabled, long done_before)
    : enabled_(enabled), tty_(::isatty(2) != 0), done_before_(done_before),
      start_(std::chrono::steady_clock::now()), last_(start_ - std::chrono::seconds(10)) {}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  const long t = std::lround(s);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%.1fs", s);
  return buf;
}

void ProgressLine::update(const std::string& label, long done, long total,
                          const std::string& extra) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  // A terminal gets ~4 updates a second; a log file one line every 10 seconds.
  const double min_gap = tty_ ? 0.25 : 10.0;
  if (done < total && std::chrono::duration<double>(now - last_).count() < min_gap) return;
  last_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const long done_here = done - done_before_;
  const double eta =
      done_here > 0 ? elapsed * static_cast<double>(total - done) / done_here : NAN;
  char head[160];
  std::snprintf(head, sizeof head, "%s %ld/%ld (%3.0f%%) ", label.c_str(), done, total,
                100.0 * done / std::max(total, 1L));
  std::string line = head + extra + "  ETA " + format_duration(eta);
  if (tty_) {
    std::string pad(last_len_ > line.size() ? last_len_ - line.size() : 0, ' ');
    std::fprintf(stderr, "\r%s%s", line.c_str(), pad.c_str());
    last_len_ = line.size();
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

void ProgressLine::finish() {
  if (!enabled_ || !tty_ || last_len_ == 0) return;
  std::fprintf(stderr, "\r%s\r", std::string(last_len_, ' ').c_str());
  std::fflush(stderr);
  last_len_ = 0;
}

}  // namespace tdrop
