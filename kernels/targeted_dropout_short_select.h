// The select of the fused kernel's short rows (a row of at most kTdWarpRowMax entries on one warp
// or on a group of 4 warps), written once for the host and the device: the kernel runs it with
// sums over the row's threads, and a CPU test (tests/test_td_fused_on_cpu.cpp) runs it with one
// host thread holding the whole row and checks every answer against a sort.
#pragma once
#include <bit>
#include <cstdint>

#include "core/host_device.h"
#include "kernels/targeted_dropout.h"
#include "kernels/targeted_dropout_quad.h"

namespace tdrop {

// Index of the highest set bit of x; -1 for 0.
TDROP_HD int td_top_bit(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return 31 - __clz(x);
#else
  return 31 - std::countl_zero(x);
#endif
}

// The k-th smallest key (0 < k < n) of a row held by `row`'s threads: G chunks of 4 entries per
// thread, entries Row::kSpan * g + 4 * row.index() + i of chunk g (entries past n were loaded as
// 0), in Quads with members x, y, z, w. Row gives sum() and or_and() over its threads. Bit by bit
// from the top: `remaining` is the rank sought among the keys that match `prefix` so far; the
// keys with a 0 next fix the bit. Bits that all keys share are taken at once from the row's AND
// and OR.
template <int G, class Row, class Quad>
TDROP_HD TdThreshold short_select(const Quad (&b)[G], int64_t n, int64_t k, Row& row) {
  const int first = 4 * row.index();
  const unsigned padding = static_cast<unsigned>(Row::kSpan * G - n);  // zeros past the row
  unsigned all_or = 0, all_and = 0x7fffffffu;
  TDROP_UNROLL
  for (int g = 0; g < G; ++g) {
    const uint32_t bits[4] = {b[g].x, b[g].y, b[g].z, b[g].w};
    TDROP_UNROLL
    for (int i = 0; i < 4; ++i) {
      const bool valid = Row::kSpan * g + first + i < n;
      all_or |= valid ? magnitude_key(bits[i]) : 0u;
      all_and &= valid ? magnitude_key(bits[i]) : 0x7fffffffu;
    }
  }
  row.or_and(&all_or, &all_and);
  const uint32_t differ = all_or ^ all_and;  // bits on which the keys disagree
  const int top = td_top_bit(differ);
  uint32_t prefix = top < 0 ? all_and : all_and & ~((2u << top) - 1u);
  unsigned remaining = static_cast<unsigned>(k);
  for (int bit = top; bit >= 0; --bit) {
    // Masks stay inside bits 30..0, so a key's sign bit never matters.
    const uint32_t m = ~((1u << bit) - 1u) & 0x7fffffffu;
    unsigned zeros = 0;  // keys matching prefix above `bit` with a 0 at `bit`
    TDROP_UNROLL
    for (int g = 0; g < G; ++g) {
      zeros += (b[g].x & m) == prefix;
      zeros += (b[g].y & m) == prefix;
      zeros += (b[g].z & m) == prefix;
      zeros += (b[g].w & m) == prefix;
    }
    zeros = row.sum(zeros) - (prefix == 0 ? padding : 0u);
    // Exactly the keys left with a 0 here are targeted: the k smallest are those up to
    // prefix with every lower bit set, and the lower bits need no step. Once the keys left are
    // few (after about log2(n) bits), the first 0 bit of the k-th key ends the walk, where it
    // went on to bit 0 before (ResNet-32's warps spent about 30 steps per row).
    if (remaining == zeros) return TdThreshold{prefix | ((1u << bit) - 1u), 0, false};
    if (remaining > zeros) {
      remaining -= zeros;
      prefix |= 1u << bit;
    }
  }
  unsigned equal = 0;
  TDROP_UNROLL
  for (int g = 0; g < G; ++g) {
    equal += magnitude_key(b[g].x) == prefix;
    equal += magnitude_key(b[g].y) == prefix;
    equal += magnitude_key(b[g].z) == prefix;
    equal += magnitude_key(b[g].w) == prefix;
  }
  equal = row.sum(equal) - (prefix == 0 ? padding : 0u);
  return TdThreshold{prefix, remaining, remaining < equal};
}

}  // namespace tdrop
