// The radix select of the fused kernel's block rows whose keys stay in registers
// (TdBlockSelect::Registers), written once for the host and the device: the kernel runs it with
// the block's shared histogram, and a CPU test (tests/test_td_fused_on_cpu.cpp) runs it with a
// plain one and one host thread holding the whole row, checking every answer against a sort.
#pragma once
#include <cstdint>

#include "core/host_device.h"
#include "kernels/targeted_dropout_quad.h"

namespace tdrop {

// The weight-mode radix selects take the 31-bit keys in three digits (bits 30..20, 19..9, 8..0):
// one pass fewer than 8-bit digits, and the first digit (exponent and 3 mantissa bits) spreads
// a row of weights over 8x more bins, so fewer histogram atomics collide.
TDROP_HD constexpr int td_digit_shift(int d) { return d == 0 ? 20 : d == 1 ? 9 : 0; }
TDROP_HD constexpr int td_digit_bits(int d) { return d == 2 ? 9 : 11; }
TDROP_HD constexpr uint32_t td_digit_mask(int d) {
  return ((1u << td_digit_bits(d)) - 1) << td_digit_shift(d);
}
inline constexpr int kTdRadixBins = 1 << 11;
static_assert(td_digit_mask(0) + td_digit_mask(1) + td_digit_mask(2) == 0x7fffffffu,
              "digits tile the key");

// What a histogram pass found: the bin holding rank `remaining`, that rank within the bin, and
// how many keys the bin holds.
struct TdDigit {
  unsigned digit = 0, remaining = 0, count = 0;
};

// The k-th smallest key (0 < k < n) of a row held by the threads of `hist`: G tiles of
// Hist::kSpan entries, of which each thread holds 4 consecutive keys per tile in Quads with
// members x, y, z, w (keys, not bit patterns; entries past n are keys of 0). Hist gives add4()
// (count 4 keys' bins where active) and find(remaining, bin0_excess) (the TdDigit of the bins
// counted since the last find, bin 0 less `bin0_excess`; it clears the counts). Entries past
// the row are taken off bin 0 while the prefix is 0. It stops after a digit whose bin is
// targeted whole: then the k smallest keys are exactly those up to the bin's largest possible
// key, and the later digits need no pass (after the second digit the usual case: that bin of a
// row of real weights holds one key).
template <int G, class Hist, class Quad>
TDROP_HD TdThreshold radix_select_held(const Quad (&b)[G], int64_t n, int64_t k, Hist& hist) {
  const unsigned padding = static_cast<unsigned>(Hist::kSpan * G - n);
  uint32_t prefix = 0, pmask = 0;
  unsigned remaining = static_cast<unsigned>(k), count = 0;
  TDROP_UNROLL
  for (int d = 0; d < 3; ++d) {
    TDROP_UNROLL
    for (int g = 0; g < G; ++g) {
      const uint32_t keys[4] = {b[g].x, b[g].y, b[g].z, b[g].w};
      unsigned bins[4];
      bool active[4];
      TDROP_UNROLL
      for (int i = 0; i < 4; ++i) {
        active[i] = ((keys[i] ^ prefix) & pmask) == 0;
        bins[i] = (keys[i] & td_digit_mask(d)) >> td_digit_shift(d);
      }
      hist.add4(bins, active);
    }
    const TdDigit found = hist.find(remaining, prefix == 0 ? padding : 0u);
    prefix |= found.digit << td_digit_shift(d);
    pmask |= td_digit_mask(d);
    remaining = found.remaining;
    count = found.count;
    if (d < 2 && remaining == count) return TdThreshold{prefix | (~pmask & 0x7fffffffu), 0, false};
  }
  return TdThreshold{prefix, remaining, remaining < count};
}

}  // namespace tdrop
