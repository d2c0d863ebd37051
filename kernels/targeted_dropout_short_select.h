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

// 0 for x = 0, else 1. On the device through PTX's min: written in C++, the compiler turns it
// back into a compare and a select, and three of them no longer add in one instruction.
TDROP_HD uint32_t td_min1(uint32_t x) {
#if defined(__CUDA_ARCH__)
  uint32_t r;
  asm("min.u32 %0, %1, 1;" : "=r"(r) : "r"(x));
  return r;
#else
  return x < 1u ? x : 1u;
#endif
}

// The k-th smallest key (0 < k < n) of a row held by `row`'s threads: G chunks of 4 entries per
// thread, entries Row::kSpan * g + 4 * row.index() + i of chunk g (entries past n were loaded as
// 0), as bit patterns in Quads with members x, y, z, w. Row gives sum() and or_and() over its
// threads. Bit by bit from the top: `remaining` is the rank sought among the keys that match
// `prefix` so far; the keys with a 0 next fix the bit. Bits that all keys share are taken at
// once from the row's AND and OR.
template <int G, class Row, class Quad>
TDROP_HD TdThreshold short_select(const Quad (&b)[G], int64_t n, int64_t k, Row& row) {
  const int first = 4 * row.index();
  const unsigned padding = static_cast<unsigned>(Row::kSpan * G - n);  // zeros past the row
  uint32_t key[G][4];  // magnitude keys, so that a step masks and compares in one instruction
  unsigned all_or = 0, all_and = 0x7fffffffu;
  TDROP_UNROLL
  for (int g = 0; g < G; ++g) {
    const uint32_t bits[4] = {b[g].x, b[g].y, b[g].z, b[g].w};
    TDROP_UNROLL
    for (int i = 0; i < 4; ++i) {
      key[g][i] = magnitude_key(bits[i]);
      const bool valid = Row::kSpan * g + first + i < n;
      all_or |= valid ? key[g][i] : 0u;
      all_and &= valid ? key[g][i] : 0x7fffffffu;
    }
  }
  row.or_and(&all_or, &all_and);
  const uint32_t differ = all_or ^ all_and;  // bits on which the keys disagree
  const int top = td_top_bit(differ);
  uint32_t prefix = top < 0 ? all_and : all_and & ~((2u << top) - 1u);
  unsigned remaining = static_cast<unsigned>(k);
  for (int bit = top; bit >= 0; --bit) {
    const uint32_t m = ~((1u << bit) - 1u);
    // Keys matching prefix above `bit` with a 0 at `bit`, counted as the thread's 4G keys less
    // those that differ: td_min1((key & m) ^ prefix) is 1 exactly for a key that differs, one
    // instruction for the mask and compare and one for the min, and three terms add in one,
    // where `zeros += (key & m) == prefix` took a mask, a compare, an add and a predicated move
    // (sm_90 SASS; this loop is most of a short row's select).
    unsigned differing = 0;
    TDROP_UNROLL
    for (int g = 0; g < G; ++g) {
      differing += td_min1((key[g][0] & m) ^ prefix) + td_min1((key[g][1] & m) ^ prefix) +
                   td_min1((key[g][2] & m) ^ prefix) + td_min1((key[g][3] & m) ^ prefix);
    }
    const unsigned zeros = row.sum(4u * G - differing) - (prefix == 0 ? padding : 0u);
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
  for (int g = 0; g < G; ++g)
    for (int i = 0; i < 4; ++i) equal += key[g][i] == prefix;
  equal = row.sum(equal) - (prefix == 0 ? padding : 0u);
  return TdThreshold{prefix, remaining, remaining < equal};
}

}  // namespace tdrop
