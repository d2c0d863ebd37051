// CPU reference for targeted dropout, written for clarity: order entries by (key, index) packed
// into one 64-bit number, select the k smallest (nth_element), draw. The CUDA kernels and the
// CPU training path below (targeted_dropout_cpu: radix select, branch-free per-entry loop) must
// reproduce its output bit for bit.
#include "kernels/targeted_dropout.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "core/parallel.h"

namespace tdrop {

int64_t td_count(double gamma, int64_t count) {
  TDROP_CHECK(gamma >= 0.0 && gamma <= 1.0, "targeted dropout: gamma ", gamma,
              " is outside [0, 1]");
  // gamma is a decimal held in binary: 0.57 is 0.56999999999999995, and 0.57 * 300 rounds to
  // 170.99999999999997. A product within a few ulps of an integer is that integer, so k is the
  // decimal's floor (171), as the user wrote it; the error of a double product is far smaller.
  const double x = gamma * static_cast<double>(count);
  const double nearest = std::nearbyint(x);
  const double k = std::abs(x - nearest) <= 8 * DBL_EPSILON * std::max(1.0, x) ? nearest
                                                                                 : std::floor(x);
  return std::min<int64_t>(count, static_cast<int64_t>(k));
}

double unit_norm_sq_reference(const float* row, int64_t n) {
  double lanes[kNormLanes] = {0.0};
  for (int64_t j = 0; j < n; ++j) {
    const double x = row[j];
    lanes[j % kNormLanes] += x * x;
  }
  for (int s = kNormLanes / 2; s > 0; s /= 2)
    for (int t = 0; t < s; ++t) lanes[t] += lanes[t + s];
  return lanes[0];
}

void td_check_count(const TdTask& t) {
  TDROP_CHECK(t.k >= 0 && t.k <= (t.unit ? t.rows : t.n), "targeted dropout: layer '", t.name,
              "': k = ", t.k, " out of range for [", t.rows, ", ", t.n, "]");
}

bool td_short_rows_on_warps(std::span<const TdTask> tasks, TdRows rows, int multiprocessors) {
  if (rows != TdRows::Auto) return rows == TdRows::Warp;
  // The blocks the launch would give its short rows: each task's rows rounded up to whole
  // blocks, as the kernel's task table counts them.
  int64_t blocks = 0;
  for (const TdTask& t : tasks)
    if (!t.unit && t.rows > 0 && t.n > 0 && t.n <= kTdWarpRowMax)
      blocks += (t.rows + kTdWarpRowsPerBlock - 1) / kTdWarpRowsPerBlock;
  return blocks >= multiprocessors;
}

namespace {

uint32_t bits_of(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}

// What both CPU paths require of a task: k in range, and every weight finite.
void check_task(const TdTask& t) {
  td_check_count(t);
  // One branch-free pass first (it vectorises); the search for the culprit only on failure.
  uint32_t any_nonfinite = 0;
  for (int64_t i = 0; i < t.rows * t.n; ++i)
    any_nonfinite |= magnitude_key(bits_of(t.w[i])) >= kNonFiniteKey;
  if (!any_nonfinite) return;
  for (int64_t i = 0; i < t.rows * t.n; ++i) {
    if (magnitude_key(bits_of(t.w[i])) >= kNonFiniteKey)
      fail("targeted dropout: layer '", t.name, "' has a non-finite weight (", t.w[i], ") at row ",
           i / t.n, ", column ", i % t.n, " of [", t.rows, ", ", t.n, "]");
  }
}

// Draws for consecutive indices: each Philox block serves four of them.
class Draws {
 public:
  Draws(const TdTask& t, uint64_t seed) : t_(t), seed_(seed) {}
  bool drops(uint64_t index) {
    if ((index >> 2) != block_index_ || !valid_) {
      block_index_ = index >> 2;
      block_ = philox_block(seed_, t_.stream, block_index_);
      valid_ = true;
    }
    return bernoulli_from_u32(block_.v[index & 3], t_.drop_threshold);
  }

 private:
  const TdTask& t_;
  uint64_t seed_, block_index_ = 0;
  Philox4 block_{};
  bool valid_ = false;
};

// Writes W' and the mask from a per-entry "dropped" predicate.
template <class Dropped>
void write_outputs(const TdTask& t, Dropped dropped) {
  const int64_t words = mask_words_per_row(t.n);
  for (int64_t r = 0; r < t.rows; ++r) {
    uint32_t* m = t.mask + r * words;
    std::fill(m, m + words, 0u);
    for (int64_t c = 0; c < t.n; ++c) {
      const int64_t i = r * t.n + c;
      if (dropped(r, c)) {
        t.w_out[i] = 0.0f;
      } else {
        t.w_out[i] = t.w[i];
        m[c / 32] |= 1u << (c % 32);
      }
    }
  }
}

}  // namespace

void targeted_dropout_reference(const TdTask& t, uint64_t seed) {
  check_task(t);
  if (!t.unit) {
    // targeted[r * n + c]: the first k of row r in (magnitude key, column) order.
    std::vector<uint8_t> targeted(static_cast<size_t>(t.rows * t.n), 0);
    std::vector<uint64_t> order(static_cast<size_t>(t.n));  // (key << 32) | column
    for (int64_t r = 0; r < t.rows && t.k > 0; ++r) {
      const float* row = t.w + r * t.n;
      for (int64_t c = 0; c < t.n; ++c)
        order[c] = (uint64_t{magnitude_key(bits_of(row[c]))} << 32) | static_cast<uint64_t>(c);
      if (t.k < t.n) std::nth_element(order.begin(), order.begin() + t.k, order.end());
      for (int64_t j = 0; j < t.k; ++j) targeted[r * t.n + (order[j] & 0xffffffffu)] = 1;
    }
    Draws draws(t, seed);
    write_outputs(t, [&](int64_t r, int64_t c) {
      const uint64_t i = static_cast<uint64_t>(r * t.n + c);
      return targeted[i] && draws.drops(i);
    });
    return;
  }
  // Unit mode: rank rows by the canonical squared norm, ties by row index.
  std::vector<double> norms(static_cast<size_t>(t.rows));
  for (int64_t r = 0; r < t.rows; ++r) norms[r] = unit_norm_sq_reference(t.w + r * t.n, t.n);
  std::vector<int64_t> order(static_cast<size_t>(t.rows));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return norms[a] != norms[b] ? norms[a] < norms[b] : a < b;
  });
  std::vector<uint8_t> row_targeted(static_cast<size_t>(t.rows), 0);
  for (int64_t j = 0; j < t.k; ++j) row_targeted[order[j]] = 1;
  Draws entry_draws(t, seed), row_draws(t, seed);
  write_outputs(t, [&](int64_t r, int64_t c) {
    if (!row_targeted[r]) return false;
    return t.per_weight_draws ? entry_draws.drops(static_cast<uint64_t>(r * t.n + c))
                              : row_draws.drops(static_cast<uint64_t>(r));
  });
}

// ---- the CPU training path ---------------------------------------------------------------

namespace {

// A row's targeted set: keys below T, and the first `ties` keys equal to T by column.
struct RowThreshold {
  uint32_t T;
  int64_t ties;
};

// Per-row buffers of the training path, allocated once per task.
struct RowScratch {
  explicit RowScratch(int64_t n)
      : keys(static_cast<size_t>(n)), spare(static_cast<size_t>(n)),
        blocks(static_cast<size_t>(n / 4 + 2)), kept(static_cast<size_t>(n)) {}
  std::vector<uint32_t> keys, spare;
  std::vector<Philox4> blocks;
  std::vector<uint8_t> kept;  // 1 = kept, one byte per entry
};

// The k-th smallest (1 <= k <= n) of a row's keys, T, and how many keys equal to T are
// targeted (k less the keys below T). Radix counting on the key's digits from the top: the
// exponent (bits 30..23; bit 31 of a magnitude key is 0), then the mantissa in 8, 8 and 7 bits.
// After each round only the keys in the chosen bin go on (copied aside without a branch), and
// once few are left sorting them beats another round. The exponent round counts into 4
// interleaved histograms: a layer's weights share few exponents, and increments of one counter
// in a row would wait on each other; mantissa digits spread, so one histogram serves them (a
// quarter of the clearing). `cur` and `next` (n keys each) are overwritten.
RowThreshold radix_select(uint32_t* cur, uint32_t* next, int64_t n, int64_t k) {
  constexpr int kShift[4] = {23, 15, 7, 0};
  constexpr uint32_t kDigitMask[4] = {255u, 255u, 255u, 127u};
  constexpr int64_t kSortAtMost = 48;
  uint32_t prefix = 0;
  int64_t remaining = k;  // T's rank among the keys still in play
  for (int round = 0;; ++round) {
    if (n <= kSortAtMost) {
      std::sort(cur, cur + n);
      const uint32_t T = cur[remaining - 1];
      return {T, remaining - (std::lower_bound(cur, cur + n, T) - cur)};
    }
    const int shift = kShift[round];
    const uint32_t digit_mask = kDigitMask[round];
    uint32_t counts[256] = {};
    if (round == 0) {
      uint32_t hist[4][256] = {};
      for (int64_t c = 0; c < n; ++c) ++hist[c & 3][cur[c] >> shift];
      for (int d = 0; d < 256; ++d) counts[d] = hist[0][d] + hist[1][d] + hist[2][d] + hist[3][d];
    } else {
      for (int64_t c = 0; c < n; ++c) ++counts[(cur[c] >> shift) & digit_mask];
    }
    uint32_t d = 0;
    for (; remaining > int64_t{counts[d]}; ++d) remaining -= counts[d];
    prefix |= d << shift;
    if (round == 3) return {prefix, remaining};
    int64_t kept = 0;
    for (int64_t c = 0; c < n; ++c) {
      next[kept] = cur[c];
      kept += ((cur[c] >> shift) & digit_mask) == d;
    }
    std::swap(cur, next);
    n = kept;
  }
}

// Packs 32 (or, at a row's end, fewer) kept flags, one byte of 0 or 1 each, into a mask word.
// Eight at a time: in a little-endian word of eight 0/1 bytes, the multiply gathers byte j's
// bit at bit 56 + j with no carries (each partial product lands on its own bit).
uint32_t pack_kept(const uint8_t* kept, int64_t count) {
  uint8_t bytes[32] = {};
  std::memcpy(bytes, kept, static_cast<size_t>(count));
  uint32_t word = 0;
  for (int g = 0; g < 4; ++g) {
    uint64_t eight;
    std::memcpy(&eight, bytes + 8 * g, 8);
    word |= static_cast<uint32_t>((eight * 0x0102040810204080ull) >> 56) << (8 * g);
  }
  return word;
}

// One row of a weight-mode task: select, draw, write W' and the mask. The per-entry pass has
// no data-dependent branch (a random targeted set would mispredict every other one) and no
// loop-carried state, so the compiler vectorises it: it targets keys below T, and the few keys
// equal to T are settled afterwards. The row's Philox blocks are drawn first, in a loop of
// independent calls the CPU can overlap.
void weight_row(const TdTask& t, int64_t r, uint64_t seed, RowScratch& s) {
  const int64_t n = t.n, base = r * n, words = mask_words_per_row(n);
  const float* w = t.w + base;
  float* out = t.w_out + base;
  uint32_t* mask = t.mask + r * words;
  if (n == 0) return;  // no entries (an empty layer's buffers may be null)
  if (t.k == 0 || t.drop_threshold == 0) {  // nothing can be dropped
    std::memcpy(out, w, static_cast<size_t>(n) * sizeof(float));
    std::fill(mask, mask + words, 0xffffffffu);
    if (n % 32) mask[words - 1] = (1u << (n % 32)) - 1u;  // padding bits are 0
    return;
  }
  // key < T is targeted, and of key == T the first `ties`; k = n gives a T above every key.
  RowThreshold th{0xffffffffu, 0};
  if (t.k < n) {
    for (int64_t c = 0; c < n; ++c) s.keys[c] = magnitude_key(bits_of(w[c]));
    th = radix_select(s.keys.data(), s.spare.data(), n, t.k);
  }
  const uint64_t first_block = static_cast<uint64_t>(base) >> 2;
  for (uint64_t b = first_block; b <= static_cast<uint64_t>(base + n - 1) >> 2; ++b)
    s.blocks[b - first_block] = philox_block(seed, t.stream, b);
  // Entry c's draw: Philox blocks are four consecutive draws, so the row's draws are one run.
  const uint32_t* draw = s.blocks[0].v + (base & 3);
  uint8_t* kept = s.kept.data();
  const uint32_t threshold = t.drop_threshold;
  auto settle = [&](int64_t c, bool targeted) {
    const uint32_t bits = bits_of(w[c]);
    const bool dropped = targeted & bernoulli_from_u32(draw[c], threshold);
    const uint32_t keep = static_cast<uint32_t>(dropped) - 1u;  // all ones when kept
    const uint32_t b = bits & keep;                              // dropped: +0.0
    std::memcpy(out + c, &b, 4);
    kept[c] = static_cast<uint8_t>(keep & 1u);
  };
  for (int64_t c = 0; c < n; ++c) settle(c, magnitude_key(bits_of(w[c])) < th.T);
  for (int64_t c = 0, ties = th.ties; ties > 0; ++c)
    if (magnitude_key(bits_of(w[c])) == th.T) {
      settle(c, true);
      --ties;
    }
  for (int64_t word = 0; word < words; ++word)
    mask[word] = pack_kept(kept + 32 * word, std::min<int64_t>(32, n - 32 * word));
}

}  // namespace

void targeted_dropout_cpu(const TdTask& t, uint64_t seed) {
  if (t.unit) return targeted_dropout_reference(t, seed);  // ranking rows is cheap
  check_task(t);
  // Rows are independent (each draws from its own Philox counters), so any split over threads
  // gives the same bits.
  parallel_for(t.rows, grain_for(t.n), [&](int64_t begin, int64_t end) {
    RowScratch s(t.n);
    for (int64_t r = begin; r < end; ++r) weight_row(t, r, seed, s);
  });
}

namespace {

// kByteLanes[b][i]: all ones when bit i of b is set. A mask byte widened to 8 lane masks, so a
// gradient is masked 8 entries at a time with plain ANDs (a variable shift per entry would keep
// the loop scalar on a baseline x86-64 build).
struct ByteLanes {
  uint32_t lane[256][8];
  ByteLanes() {
    for (int b = 0; b < 256; ++b)
      for (int i = 0; i < 8; ++i) lane[b][i] = (b >> i) & 1 ? 0xffffffffu : 0u;
  }
};
const ByteLanes kByteLanes;

}  // namespace

void td_mask_grad_cpu(const float* g, const uint32_t* mask, int64_t rows, int64_t n, float* out) {
  const int64_t words = mask_words_per_row(n);
  parallel_for(rows, grain_for(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint32_t* m = mask + r * words;
      const float* gr = g + r * n;
      float* o = out + r * n;
      int64_t c = 0;
      for (; c + 8 <= n; c += 8) {  // dropped entries become +0.0, with no branch
        const uint32_t* keep = kByteLanes.lane[(m[c / 32] >> (c % 32)) & 0xffu];
        uint32_t b[8];
        std::memcpy(b, gr + c, sizeof b);
        for (int i = 0; i < 8; ++i) b[i] &= keep[i];
        std::memcpy(o + c, b, sizeof b);
      }
      for (; c < n; ++c) {
        const uint32_t b = bits_of(gr[c]) & (0u - ((m[c / 32] >> (c % 32)) & 1u));
        std::memcpy(o + c, &b, 4);
      }
    }
  });
}

}  // namespace tdrop
