// The fused kernel's device code that is written for the host too, run on the CPU: rows walked
// through td_cut, td_targeted4 and td_dropped4 (kernels/targeted_dropout_quad.h, what each
// kernel thread runs in its final pass), and through td_dropped4_aligned with the stream's
// Philox head (the aligned steps), in the kernel's steps of 4 entries must give the
// reference's W' and mask bit for bit, with the selection stated by sorting, in both forms the
// kernel's selects return (the exact k-th key; the largest key below the next larger one, as the
// early stops give it), and as the kernel's selects find it with one host thread holding the
// row: short_select (kernels/targeted_dropout_short_select.h, the warp and group rows') and
// radix_select_held (kernels/targeted_dropout_radix_select.h, the block rows' register select),
// whose steps and passes are counted too.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <vector>

#include "kernels/targeted_dropout_quad.h"
#include "kernels/targeted_dropout_radix_select.h"
#include "kernels/targeted_dropout_short_select.h"
#include "tests/grad_check.h"
#include "tests/td_test_util.h"

namespace tdrop::testing {
namespace {

enum class CutForm { Exact, EarlyStop, ShortSelect, RadixSelect };

// short_select's Row with one host thread holding the whole row: chunk g is entries 4g..4g+3.
struct HostRow {
  static constexpr int kSpan = 4;
  int index() const { return 0; }
  unsigned sum(unsigned v) const { return v; }
  void or_and(unsigned*, unsigned*) const {}
};
struct HostQuad {
  uint32_t x = 0, y = 0, z = 0, w = 0;
};

// A row as one host thread holds it: entry c in member c % 4 of quad c / 4; entries past the
// row stay 0, as the kernel loads them.
template <int G>
struct HeldRow {
  HostQuad q[G];
};
template <int G>
std::unique_ptr<HeldRow<G>> hold(const std::vector<uint32_t>& values) {
  auto held = std::make_unique<HeldRow<G>>();
  for (size_t c = 0; c < values.size(); ++c) {
    HostQuad& q = held->q[c / 4];
    (c % 4 == 0 ? q.x : c % 4 == 1 ? q.y : c % 4 == 2 ? q.z : q.w) = values[c];
  }
  return held;
}

template <int G>
TdThreshold host_short_select(const std::vector<uint32_t>& bits, int64_t k) {
  const auto held = hold<G>(bits);
  HostRow row;
  return short_select<G>(held->q, static_cast<int64_t>(bits.size()), k, row);
}

// short_select of a row (raw float bits, sign included) of at most kTdWarpRowMax entries,
// with as few chunks as fit it among a few counts (so the zero padding varies too).
TdThreshold short_select_on_host(const std::vector<uint32_t>& bits, int64_t k) {
  const size_t n = bits.size();
  if (n <= 4) return host_short_select<1>(bits, k);
  if (n <= 8) return host_short_select<2>(bits, k);
  if (n <= 32) return host_short_select<8>(bits, k);
  if (n <= 144) return host_short_select<36>(bits, k);
  if (n <= 576) return host_short_select<144>(bits, k);
  return host_short_select<256>(bits, k);
}
static_assert(4 * 256 == kTdWarpRowMax);

// radix_select_held's histogram with one host thread: plain counts.
struct HostHistogram {
  static constexpr int kSpan = 4;
  std::vector<unsigned> counts = std::vector<unsigned>(kTdRadixBins, 0u);
  void add4(const unsigned (&bins)[4], const bool (&active)[4]) {
    for (int i = 0; i < 4; ++i) counts[bins[i]] += active[i] ? 1u : 0u;
  }
  TdDigit find(unsigned remaining, unsigned bin0_excess) {
    counts[0] -= bin0_excess;
    TdDigit found;
    unsigned below = 0;
    for (unsigned d = 0; d < counts.size(); ++d) {
      if (below < remaining && remaining <= below + counts[d])
        found = TdDigit{d, remaining - below, counts[d]};
      below += counts[d];
    }
    std::fill(counts.begin(), counts.end(), 0u);
    return found;
  }
};

template <int G>
TdThreshold host_radix_select(const std::vector<uint32_t>& bits, int64_t k) {
  std::vector<uint32_t> keys(bits.size());  // the register select holds keys, not bit patterns
  std::transform(bits.begin(), bits.end(), keys.begin(), magnitude_key);
  const auto held = hold<G>(keys);
  HostHistogram hist;
  return radix_select_held<G>(held->q, static_cast<int64_t>(bits.size()), k, hist);
}

// radix_select_held of a row of at most kTdRegisterRowMax entries (raw float bits).
TdThreshold radix_select_on_host(const std::vector<uint32_t>& bits, int64_t k) {
  const size_t n = bits.size();
  if (n <= 4) return host_radix_select<1>(bits, k);
  if (n <= 32) return host_radix_select<8>(bits, k);
  if (n <= 1024) return host_radix_select<256>(bits, k);
  return host_radix_select<1024>(bits, k);
}
static_assert(4 * 1024 == kTdRegisterRowMax);

// The k-th smallest (1 <= k < n) of a row's sorted keys: its value, how many keys lie below it
// and up to it, and the next larger key (2^31, above every key, when there is none).
struct KthKey {
  uint32_t key, next;
  int64_t below, upto;
};
KthKey kth_key(const std::vector<uint32_t>& sorted, int64_t k) {
  const uint32_t key = sorted[static_cast<size_t>(k - 1)];
  const int64_t below = std::lower_bound(sorted.begin(), sorted.end(), key) - sorted.begin();
  const int64_t upto = std::upper_bound(sorted.begin(), sorted.end(), key) - sorted.begin();
  const uint32_t next =
      upto < static_cast<int64_t>(sorted.size()) ? sorted[static_cast<size_t>(upto)] : 0x80000000u;
  return KthKey{key, next, below, upto};
}

// The row's cut (from its raw float bits), as the kernel's selects report the selection.
TdCut row_cut(const std::vector<uint32_t>& bits, int64_t k, CutForm form) {
  const int64_t n = static_cast<int64_t>(bits.size());
  if (k <= 0 || k >= n) return td_cut(k, n, TdThreshold{});
  if (form == CutForm::ShortSelect && n <= kTdWarpRowMax)
    return td_cut(k, n, short_select_on_host(bits, k));
  if (form == CutForm::RadixSelect && n <= kTdRegisterRowMax)
    return td_cut(k, n, radix_select_on_host(bits, k));
  std::vector<uint32_t> sorted(bits.size());
  for (size_t c = 0; c < bits.size(); ++c) sorted[c] = magnitude_key(bits[c]);
  std::sort(sorted.begin(), sorted.end());
  const KthKey kth = kth_key(sorted, k);
  const bool rank_ties = k < kth.upto;
  // Any key up to just below the next larger key targets the same set.
  if (form == CutForm::EarlyStop && !rank_ties)
    return td_cut(k, n, TdThreshold{kth.next - 1, 0, false});
  return td_cut(k, n, TdThreshold{kth.key, static_cast<uint32_t>(k - kth.below), rank_ties});
}

// W' and the mask of task t as the fused kernel's threads compute them, step by step. With
// `aligned`, the whole quads of rows that td_aligned_row admits take td_dropped4_aligned with
// the stream's Philox head, as the kernel's whole steps do; without, every quad takes the general
// td_targeted4 and td_dropped4, as the kernel's other steps do. Returns how many rows ranked ties
// at the threshold; *aligned_quads counts the quads that took the aligned decision.
int64_t final_pass(const TdTask& t, uint64_t seed, CutForm form, bool aligned,
                   int64_t* aligned_quads) {
  const PhiloxKeys keys = philox_keys(seed);  // as the kernel takes the seed
  const PhiloxStreamHead head = philox_stream_head(keys, t.stream);
  const uint32_t bound = td_draw_bound(t.drop_threshold);
  const int64_t n = t.n;
  int64_t ranked = 0;
  for (int64_t r = 0; r < t.rows; ++r) {
    const float* w = t.w + r * n;
    std::vector<uint32_t> bits(static_cast<size_t>(n));
    for (int64_t c = 0; c < n; ++c) bits[static_cast<size_t>(c)] = to_bits(w[c]);
    const TdCut cut = row_cut(bits, t.k, form);
    ranked += cut.rank_ties ? 1 : 0;
    uint32_t* mask = t.mask + r * mask_words_per_row(n);
    std::fill(mask, mask + mask_words_per_row(n), 0u);
    unsigned ties_before = 0;  // the kernel's scan over the threads' tie counts
    const uint64_t idx0 = static_cast<uint64_t>(r * n);
    const bool aligned_row = aligned && td_aligned_row(cut, idx0, t.drop_threshold);
    for (int64_t c0 = 0; c0 < n; c0 += 4) {
      uint32_t quad[4] = {0, 0, 0, 0};  // entries past the row are loaded as 0
      unsigned valid = 0;
      for (int i = 0; i < 4 && c0 + i < n; ++i) {
        quad[i] = magnitude_key(bits[static_cast<size_t>(c0 + i)]);
        valid |= 1u << i;
      }
      unsigned dropped;
      if (aligned_row && valid == 0xfu) {
        const Philox4 u = philox_block(keys, head, (idx0 + static_cast<uint64_t>(c0)) >> 2);
        dropped = td_dropped4_aligned(quad, cut.limit, u, bound);
        ++*aligned_quads;
      } else {
        const unsigned targeted = td_targeted4(quad, valid, cut, ties_before);
        dropped = td_dropped4(targeted, keys, t.stream, idx0 + static_cast<uint64_t>(c0),
                              t.drop_threshold);
      }
      for (int i = 0; i < 4 && c0 + i < n; ++i) {
        const int64_t c = c0 + i;
        const bool drop = (dropped >> i) & 1u;
        t.w_out[r * n + c] = drop ? 0.0f : w[c];
        if (!drop) mask[c / 32] |= 1u << (c % 32);
        ties_before += quad[i] == cut.T ? 1u : 0u;
      }
    }
  }
  return ranked;
}

TEST(TdFusedOnCpu, FinalPassMatchesReferenceBitForBit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  // Odd lengths put a row's first entry at every offset inside a Philox block (off != 0).
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1, 1}, {3, 2}, {5, 3}, {4, 5}, {3, 7}, {5, 31},
      {3, 33}, {2, 64}, {3, 127}, {2, 576}, {1, 4096}};
  int64_t cases = 0, ranked = 0, aligned_quads = 0;
  for (const auto& [rows, n] : shapes)
    for (const WeightKind kind : kEveryWeightKind) {
      const std::vector<float> w = make_weights(rows * n, kind, rng);
      for (const double gamma : {0.0, 0.1, 0.5, 33.0 / 64, 36.0 / 64, 0.99, 1.0})
        for (const float alpha : {0.0f, 0.5f, 1.0f})
          for (const CutForm form : {CutForm::Exact, CutForm::EarlyStop, CutForm::ShortSelect,
                                     CutForm::RadixSelect}) {
            const uint64_t stream = td_stream(static_cast<uint64_t>(cases), 3);
            TdOutput ref;
            targeted_dropout_reference(make_task(w, rows, n, gamma, alpha, false, stream, ref),
                                       seed);
            for (const bool aligned : {false, true}) {
              TdOutput quad;
              const TdTask t = make_task(w, rows, n, gamma, alpha, false, stream, quad);
              const int64_t rows_ranked = final_pass(t, seed, form, aligned, &aligned_quads);
              if (!aligned) ranked += rows_ranked;  // each case's rows counted once
              for (size_t i = 0; i < w.size(); ++i)
                ASSERT_EQ(to_bits(quad.w_out[i]), to_bits(ref.w_out[i]))
                    << kind_name(kind) << " " << rows << "x" << n << " gamma " << gamma
                    << " alpha " << alpha << " aligned " << aligned << " entry " << i;
              ASSERT_EQ(quad.mask, ref.mask) << kind_name(kind) << " " << rows << "x" << n
                                             << " gamma " << gamma << " alpha " << alpha
                                             << " aligned " << aligned;
            }
            ++cases;
          }
    }
  // Rows must have ranked ties at the threshold (FewValues, zeros, Ladder), not only cut below,
  // and many quads taken the aligned decision (rows of a multiple of 4 entries, and rows of the
  // others that start on a Philox block).
  EXPECT_GT(ranked, 100) << "rows in " << cases << " cases";
  EXPECT_GT(aligned_quads, 100000) << "in " << cases << " cases";
}

// Every k of short rows, a spread of k on longer ones: the answer must be the k-th key with its
// tie count, or (no ties to rank) a key from the k-th up to below the next larger one.
void expect_kth_keys(TdThreshold (*select)(const std::vector<uint32_t>&, int64_t),
                     const std::vector<int64_t>& lengths) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  int64_t checked = 0, early = 0;
  for (const int64_t n : lengths)
    for (const WeightKind kind : kEveryWeightKind) {
      const std::vector<float> w = make_weights(n, kind, rng);
      std::vector<uint32_t> bits(w.size()), sorted(w.size());
      for (size_t c = 0; c < w.size(); ++c) {
        bits[c] = to_bits(w[c]);
        sorted[c] = magnitude_key(bits[c]);
      }
      std::sort(sorted.begin(), sorted.end());
      const int64_t step = n <= 40 ? 1 : n / 37;
      for (int64_t k = 1; k < n; k += step) {
        const KthKey kth = kth_key(sorted, k);
        const TdThreshold th = select(bits, k);
        if (th.rank_ties) {
          ASSERT_EQ(th.T, kth.key) << kind_name(kind) << " n " << n << " k " << k;
          ASSERT_EQ(th.m, static_cast<uint32_t>(k - kth.below)) << kind_name(kind) << " n " << n;
          ASSERT_LT(k, kth.upto) << kind_name(kind) << " n " << n << " k " << k;
        } else {
          ASSERT_EQ(k, kth.upto) << kind_name(kind) << " n " << n << " k " << k << ": ties left";
          ASSERT_GE(th.T, kth.key) << kind_name(kind) << " n " << n << " k " << k;
          ASSERT_LT(th.T, kth.next) << kind_name(kind) << " n " << n << " k " << k;
          early += th.T != kth.key;
        }
        ++checked;
      }
    }
  // The early stops answered for some rows (a key above the k-th), the full walk for others.
  EXPECT_GT(early, checked / 10) << "of " << checked;
  EXPECT_LT(early, checked) << "of " << checked;
}

TEST(TdFusedOnCpu, ShortSelectFindsTheKthKey) {
  expect_kth_keys(short_select_on_host, {2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 127, 144, 145, 576,
                                         1000, 1024});
}

TEST(TdFusedOnCpu, RadixSelectHeldFindsTheKthKey) {
  expect_kth_keys(radix_select_on_host, {2, 3, 4, 5, 9, 31, 33, 576, 1023, 1025, 2048, 4095,
                                         4096});
}

// The selects' work, counted on the host: the row sums of a short row's bit walk (one per bit
// step, one more to count ties) and the register select's histogram passes. What keeps them
// short on the device (the walk starts at the top bit on which the row's keys differ, and both
// stop once the targeted set is settled) changes no answer when lost, so it is checked here.
struct CountingRow : HostRow {
  int sums = 0;
  unsigned sum(unsigned v) {
    ++sums;
    return v;
  }
};
struct CountingHistogram : HostHistogram {
  int passes = 0;
  TdDigit find(unsigned remaining, unsigned bin0_excess) {
    ++passes;
    return HostHistogram::find(remaining, bin0_excess);
  }
};

TEST(TdFusedOnCpu, SelectsStopOnceTheTargetedSetIsSettled) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  constexpr int kRows = 64;
  // Short rows of 575 entries (one of padding), k at the middle. Normal weights: about
  // log2(575) steps to leave the k-th key alone in its prefix, then a few more, where a walk to
  // bit 0 takes about 30. One binade (keys sharing bits 30..20): the walk starts at bit 19.
  auto short_steps = [&](WeightKind kind) {
    int64_t sums = 0;
    for (int r = 0; r < kRows; ++r) {
      std::vector<uint32_t> bits;
      for (float x : make_weights(575, kind, rng)) bits.push_back(to_bits(x));
      const auto held = hold<144>(bits);
      CountingRow row;
      short_select<144>(held->q, 575, 287, row);
      sums += row.sums;
    }
    return static_cast<double>(sums) / kRows;
  };
  const double normal = short_steps(WeightKind::Normal);
  const double binade = short_steps(WeightKind::OneBinade);
  EXPECT_LT(normal, 19.0) << "row sums per normal row";
  EXPECT_LT(binade, 12.0) << "row sums per one-binade row";
  // Register select, rows of 4095 normal weights: the third digit's pass is rarely needed.
  int two_passes = 0;
  for (int r = 0; r < kRows; ++r) {
    std::vector<uint32_t> keys;
    for (float x : make_weights(4095, WeightKind::Normal, rng))
      keys.push_back(magnitude_key(to_bits(x)));
    const auto held = hold<1024>(keys);
    CountingHistogram hist;
    radix_select_held<1024>(held->q, 4095, 2047, hist);
    two_passes += hist.passes == 2;
    EXPECT_LE(hist.passes, 3);
  }
  EXPECT_GE(two_passes, kRows * 3 / 4) << "rows settled after two histogram passes";
}

TEST(TdFusedOnCpu, CutCoversTheWholeKeyRange) {
  // k = n targets every key, the largest non-finite one included; k = 0 none.
  const uint32_t all[4] = {0u, 1u, 0x7f7fffffu, 0x7fffffffu};
  EXPECT_EQ(td_targeted4(all, 0xfu, td_cut(4, 4, TdThreshold{0, 0, false}), 0), 0xfu);
  EXPECT_EQ(td_targeted4(all, 0xfu, td_cut(0, 4, TdThreshold{0, 0, false}), 0), 0u);
  // An early stop at the largest key cannot wrap around: limit is 2^31.
  EXPECT_EQ(td_cut(3, 4, TdThreshold{0x7fffffffu, 0, false}).limit, 0x80000000u);
  EXPECT_EQ(td_targeted4(all, 0x7u, td_cut(3, 4, TdThreshold{0x7fffffffu, 0, false}), 0), 0x7u);
  // Ranked ties: the key below T, and of the three keys equal to T, with 1 tie already before
  // them, the first m - 1 = 2.
  const uint32_t ties[4] = {5u, 5u, 4u, 5u};
  EXPECT_EQ(td_targeted4(ties, 0xfu, td_cut(2, 9, TdThreshold{5u, 3, true}), 1), 0x7u);
  // Entries past the row are never targeted, ties or not.
  EXPECT_EQ(td_targeted4(ties, 0x3u, td_cut(2, 9, TdThreshold{5u, 3, true}), 1), 0x3u);
}

TEST(TdFusedOnCpu, DropsFollowTheDrawsOfTheirOwnElements) {
  // Each targeted entry's draw is philox_u32 of its element index, at every offset in a block.
  const uint64_t seed = fresh_seed(), stream = td_stream(7, 2);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const PhiloxKeys keys = philox_keys(seed);  // the kernel's form of the seed
  // The edges of the threshold too: the kernel compares a draw with threshold << 8.
  std::mt19937 rng(static_cast<uint32_t>(seed));
  const uint32_t thresholds[] = {1u, bernoulli_threshold(0.5f), (1u << 24) - 1u,
                                 1u + static_cast<uint32_t>(rng() % ((1u << 24) - 1u))};
  for (const uint32_t threshold : thresholds)
    for (uint64_t idx0 = 0; idx0 < 64; ++idx0)
      for (unsigned targeted = 0; targeted < 16; ++targeted) {
        unsigned expect = 0;
        for (int i = 0; i < 4; ++i)
          if (((targeted >> i) & 1u) &&
              bernoulli_from_u32(philox_u32(seed, stream, idx0 + i), threshold))
            expect |= 1u << i;
        ASSERT_EQ(td_dropped4(targeted, keys, stream, idx0, threshold), expect)
            << "threshold " << threshold << " idx0 " << idx0 << " targeted " << targeted;
        ASSERT_EQ(td_dropped4(targeted, seed, stream, idx0, threshold), expect);
      }
  for (uint64_t idx0 = 0; idx0 < 64; ++idx0)
    for (unsigned targeted = 0; targeted < 16; ++targeted) {
      ASSERT_EQ(td_dropped4(targeted, keys, stream, idx0, 0), 0u);
      ASSERT_EQ(td_dropped4(targeted, keys, stream, idx0, 1u << 24), targeted);
    }
  // At the boundary: a threshold equal to a draw's top 24 bits does not fire for it, one more
  // does. Draws whose low 8 bits are 0 (about 1 in 256: some 64 of these 16384) are where a
  // compare of the whole draw could slip.
  int low_zero = 0;
  for (uint64_t idx0 = 0; idx0 < 16384; ++idx0) {
    const uint32_t u = philox_u32(seed, stream, idx0), top = u >> 8;
    if (idx0 >= 64 && (u & 0xffu) != 0) continue;
    low_zero += (u & 0xffu) == 0;
    if (top > 0) {
      ASSERT_EQ(td_dropped4(1u, keys, stream, idx0, top), 0u) << "idx0 " << idx0;
    }
    if (top + 1 < (1u << 24)) {
      ASSERT_EQ(td_dropped4(1u, keys, stream, idx0, top + 1), 1u) << "idx0 " << idx0;
    }
  }
  EXPECT_GT(low_zero, 0);
}

// The aligned rows' decision (td_dropped4_aligned from the stream's Philox head, against
// td_draw_bound) drops what the general one does, for every targeted nibble, at the threshold's
// edges, alpha = 1 included, and at a draw's own boundary; and it is taken only where it holds.
TEST(TdFusedOnCpu, AlignedStepsDropAsTheGeneralPath) {
  const uint64_t seed = fresh_seed(), stream = td_stream(11, 5);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const PhiloxKeys keys = philox_keys(seed);
  const PhiloxStreamHead head = philox_stream_head(keys, stream);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  const uint32_t limit = 1u + rng() % 0x7ffffffeu;
  const uint32_t thresholds[] = {1u, bernoulli_threshold(0.5f), (1u << 24) - 1u, 1u << 24,
                                 1u + static_cast<uint32_t>(rng() % ((1u << 24) - 1u))};
  for (const uint32_t threshold : thresholds)
    for (uint64_t idx0 = 0; idx0 < 256; idx0 += 4)
      for (unsigned targeted = 0; targeted < 16; ++targeted) {
        uint32_t quad[4];  // targeted entries just below the limit, the others at it
        for (int i = 0; i < 4; ++i) quad[i] = (targeted >> i) & 1u ? limit - 1u : limit;
        const Philox4 u = philox_block(keys, head, idx0 >> 2);
        ASSERT_EQ(td_dropped4_aligned(quad, limit, u, td_draw_bound(threshold)),
                  td_dropped4(targeted, keys, stream, idx0, threshold))
            << "threshold " << threshold << " idx0 " << idx0 << " targeted " << targeted;
      }
  EXPECT_EQ(td_draw_bound(1u << 24), 0xffffffffu);
  EXPECT_EQ(td_draw_bound(1u), 0xffu);
  for (uint64_t idx0 = 0; idx0 < 4096; idx0 += 4) {
    const Philox4 u = philox_block(keys, head, idx0 >> 2);
    const uint32_t top = u.v[0] >> 8, at_limit[4] = {0u, limit, limit, limit};
    if (top > 0) {
      ASSERT_EQ(td_dropped4_aligned(at_limit, limit, u, td_draw_bound(top)), 0u);
    }
    ASSERT_EQ(td_dropped4_aligned(at_limit, limit, u, td_draw_bound(top + 1)), 1u);
  }
  const TdCut plain = td_cut(2, 9, TdThreshold{5u, 0, false});
  EXPECT_TRUE(td_aligned_row(plain, 36, 1u));
  EXPECT_TRUE(td_aligned_row(plain, 0, 1u << 24));
  EXPECT_FALSE(td_aligned_row(plain, 38, 1u));  // the row starts inside a block
  EXPECT_FALSE(td_aligned_row(plain, 36, 0u));  // alpha = 0: nothing to draw
  EXPECT_FALSE(td_aligned_row(td_cut(2, 9, TdThreshold{5u, 1, true}), 36, 1u));  // ties
}

}  // namespace
}  // namespace tdrop::testing
