// Learning-rate schedules as a pure function of the step, so a resumed run lands on the same
// rate. Linear warm-up (if any) multiplies whichever schedule follows.
#pragma once
#include <string>

namespace tdrop {

struct LrSchedule {
  enum class Kind { Constant, Step, Cosine } kind = Kind::Constant;
  float base_lr = 0.1f;
  long total_steps = 1;
  long warmup_steps = 0;
  // Step: multiply by `gamma` at 50% and again at 75% of the run (the CIFAR ResNet recipe).
  float gamma = 0.1f;

  float at(long step) const;
};

LrSchedule::Kind parse_schedule(const std::string& s);
const char* schedule_name(LrSchedule::Kind k);

}  // namespace tdrop
