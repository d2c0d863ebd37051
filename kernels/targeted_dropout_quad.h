// The fused kernel's decision for 4 consecutive entries of a weight-mode row (one thread's share
// of a step of its final pass), written once for the host and the device: the kernel calls it,
// and a CPU test walks rows through it in the kernel's order and compares with the reference
// bit for bit (tests/test_td_fused_on_cpu.cpp), so this arithmetic is checked without a GPU.
#pragma once
#include <cstdint>

#include "core/philox.h"
#include "kernels/targeted_dropout.h"

namespace tdrop {

// What a row's selection found (0 < k < n): the entries with key < T are targeted, and of those
// with key == T the first m by column; rank_ties says whether fewer than all of them are, i.e.
// whether ties need ranking at all. Without rank_ties, T may be any key from the k-th smallest up
// to just below the next larger key of the row (the selects' early stops report the largest key
// of the bin or bit that settled the targeted set), and m is unused.
struct TdThreshold {
  uint32_t T = 0;
  uint32_t m = 0;
  bool rank_ties = false;
};

// What the final pass needs of a row: an entry is targeted when its key is below `limit`, or,
// with rank_ties, when its key equals T and fewer than m entries before it by column have it.
struct TdCut {
  uint32_t limit = 0;
  uint32_t T = 0;
  uint32_t m = 0;
  bool rank_ties = false;
};

// The cut of a row of n entries with k targeted (`th` is read only when 0 < k < n).
TDROP_HD TdCut td_cut(int64_t k, int64_t n, const TdThreshold& th) {
  if (k <= 0) return TdCut{};                            // nothing targeted
  if (k >= n) return TdCut{0x80000000u, 0, 0, false};    // every key (keys have 31 bits)
  if (th.rank_ties) return TdCut{th.T, th.T, th.m, true};  // keys below T, then the first m ties
  return TdCut{th.T + 1, th.T, 0, false};                // keys up to T (T < 2^31: no overflow)
}

// Targeted nibble (bit i: entry c0 + i) of the keys of entries c0..c0+3. `valid`: the nibble of
// the entries inside the row; `tie_rank`: how many entries before c0 have the key cut.T.
TDROP_HD unsigned td_targeted4(const uint32_t (&keys)[4], unsigned valid, const TdCut& cut,
                               unsigned tie_rank) {
  // Written as `c ? 1u << i : 0u`: GCC 12 with -fsanitize=shift,bounds miscompiled the form
  // `(c ? 1u : 0u) << i` in this loop (it dropped a bit), which the CPU test caught.
  unsigned targeted = 0;
  for (int i = 0; i < 4; ++i) targeted |= keys[i] < cut.limit ? 1u << i : 0u;
  if (cut.rank_ties) {
    for (int i = 0; i < 4; ++i) {
      const bool tie = ((valid >> i) & 1u) != 0 && keys[i] == cut.T;
      if (tie && tie_rank < cut.m) targeted |= 1u << i;
      tie_rank += tie ? 1u : 0u;
    }
  }
  return targeted & valid;
}

// Number j (0..7) of the run of 8 that Philox blocks a and b make, selected rather than indexed:
// a runtime index into an array would put it in local memory on the device.
TDROP_HD uint32_t td_run_lane(const Philox4& a, const Philox4& b, unsigned j) {
  const uint32_t lo = j == 0 ? a.v[0] : j == 1 ? a.v[1] : j == 2 ? a.v[2] : a.v[3];
  const uint32_t hi = j == 4 ? b.v[0] : j == 5 ? b.v[1] : j == 6 ? b.v[2] : b.v[3];
  return j < 4 ? lo : hi;
}

// Dropped nibble: the targeted entries whose draws fire (threshold = bernoulli_threshold(alpha)).
// idx0 = r * n + c0 is entry c0's element index; its draw is number idx0 % 4 of Philox block
// idx0 / 4, so the 4 entries take numbers off..3 of that block and, when off > 0, numbers
// 0..off-1 of the next, which is drawn only when one of those entries is targeted. Rows of a
// multiple of 4 entries always have off = 0: one block, no selects.
// `key` is the seed (uint64_t) or its round keys (PhiloxKeys, as the kernel has them): the same
// draws.
template <class Key>
TDROP_HD unsigned td_dropped4(unsigned targeted, const Key& key, uint64_t stream, uint64_t idx0,
                              uint32_t threshold) {
  if (targeted == 0 || threshold == 0) return 0;
  if (threshold >= (1u << 24)) return targeted;  // alpha = 1: every draw fires
  const unsigned off = static_cast<unsigned>(idx0 & 3);
  const Philox4 a = philox_block(key, stream, idx0 >> 2);
  uint32_t u[4] = {a.v[0], a.v[1], a.v[2], a.v[3]};
  if (off != 0) {
    const bool next = (targeted >> (4 - off)) != 0;
    const Philox4 b = next ? philox_block(key, stream, (idx0 >> 2) + 1) : Philox4{};
    for (int i = 0; i < 4; ++i) u[i] = td_run_lane(a, b, off + static_cast<unsigned>(i));
  }
  // bernoulli_from_u32's (u >> 8) < threshold is u < threshold * 2^8 for threshold < 2^24
  // (alpha = 1 returned above): one compare per draw, no shift.
  const uint32_t below = threshold << 8;
  unsigned dropped = 0;
  for (int i = 0; i < 4; ++i) dropped |= u[i] < below ? 1u << i : 0u;
  return dropped & targeted;
}

// The final pass's common case, settled once per row: no ties to rank, alpha > 0, and the row
// starting on a Philox block (r * n a multiple of 4, as every row of a multiple of 4 entries
// does). Then the 4 entries of a whole step take the 4 numbers of one block in order, and
// td_targeted4 and td_dropped4 come down to two compares per entry (td_dropped4_aligned).
TDROP_HD bool td_aligned_row(const TdCut& cut, uint64_t idx0, uint32_t threshold) {
  return !cut.rank_ties && (idx0 & 3) == 0 && threshold > 0;
}
// A draw u fires when u <= td_draw_bound(threshold), threshold in [1, 2^24]: u < threshold * 2^8
// below 2^24, and always at 2^24 (alpha = 1).
TDROP_HD uint32_t td_draw_bound(uint32_t threshold) {
  return threshold >= (1u << 24) ? 0xffffffffu : (threshold << 8) - 1u;
}
// Dropped nibble of 4 entries (keys of c0..c0+3, all inside the row) of an aligned row, from
// the Philox block of element c0 (c0 a multiple of 4).
TDROP_HD unsigned td_dropped4_aligned(const uint32_t (&keys)[4], uint32_t limit, const Philox4& u,
                                      uint32_t bound) {
  unsigned dropped = 0;
  TDROP_UNROLL
  for (int i = 0; i < 4; ++i) dropped |= keys[i] < limit && u.v[i] <= bound ? 1u << i : 0u;
  return dropped;
}

}  // namespace tdrop
