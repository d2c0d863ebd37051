// A live one-line progress report on stderr ("\r"-rewritten on a terminal, throttled), with ETA.
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

namespace tdrop {

class ProgressLine {
 public:
  explicit ProgressLine(bool enabled);
  // done of total units; `extra` is appended (loss, accuracy, ...).
  void update(const std::string& label, long done, long total, const std::string& extra);
  void finish();  // clears the line

 private:
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_, last_;
  size_t last_len_ = 0;
};

std::string format_duration(double seconds);

}  // namespace tdrop
