#include "core/philox.h"

#include <cmath>

namespace tdrop {

float PhiloxHost::next_normal() {
  // 1 - u keeps the log argument in (0, 1].
  const double u1 = 1.0 - next_uniform();
  const double u2 = next_uniform();
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

}  // namespace tdrop
