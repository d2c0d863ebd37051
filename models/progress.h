// A live one-line progress report on stderr ("\r"-rewritten on a terminal, throttled), with ETA.
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

namespace tdrop {

class ProgressLine {
 public:
  // `done_before`: units finished before this line started (a resumed epoch), which the ETA
  // must not count as done at this line's pace.
  explicit ProgressLine(bool enabled, long done_before = 0);
  ~ProgressLine() { finish(); }  // an error's message then starts on a clean line
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;
  // done of total units; `extra` is appended (loss, accuracy, ...).
  void update(const std::string& label, long done, long total, const std::string& extra);
  void finish();  // clears the line

 private:
  bool enabled_, tty_;
  long done_before_;
  std::chrono::steady_clock::time_point start_, last_;
  size_t last_len_ = 0;
};

std::string format_duration(double seconds);

}  // namespace tdrop
