#include "layers/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace tdrop {

float LrSchedule::at(long step) const {
  const double t = std::clamp(static_cast<double>(step) / std::max(total_steps, 1L), 0.0, 1.0);
  double lr = base_lr;
  switch (kind) {
    case Kind::Constant: break;
    case Kind::Step: lr *= std::pow(gamma, (t >= 0.5) + (t >= 0.75)); break;
    case Kind::Cosine: lr *= 0.5 * (1.0 + std::cos(M_PI * t)); break;
  }
  if (warmup_steps > 0 && step < warmup_steps)
    lr *= static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  return static_cast<float>(lr);
}

LrSchedule::Kind parse_schedule(const std::string& s) {
  if (s == "constant") return LrSchedule::Kind::Constant;
  if (s == "step") return LrSchedule::Kind::Step;
  if (s == "cosine") return LrSchedule::Kind::Cosine;
  fail("unknown schedule '", s, "': expected constant, step or cosine");
}

const char* schedule_name(LrSchedule::Kind k) {
  switch (k) {
    case LrSchedule::Kind::Constant: return "constant";
    case LrSchedule::Kind::Step: return "step";
    case LrSchedule::Kind::Cosine: return "cosine";
  }
  return "?";
}

}  // namespace tdrop
