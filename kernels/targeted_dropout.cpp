// CPU reference for targeted dropout, written for clarity: order entries by (key, index) packed
// into one 64-bit number, select the k smallest (nth_element), draw. The CUDA kernels and the
// CPU training path below (targeted_dropout_cpu: radix select, branch-free per-entry loop) must
// reproduce its output bit for bit.
#include "kernels/targeted_dropout.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"

namespace tdrop {

int64_t td_count(double gamma, int64_t count) {
  TDROP_CHECK(gamma >= 0.0 && gamma <= 1.0, "targeted dropout: gamma ", gamma,
              " is outside [0, 1]");
  return std::min<int64_t>(count, static_cast<int64_t>(std::floor(gamma * count)));
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

namespace {

uint32_t bits_of(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}

// What both CPU paths require of a task: k in range, and every weight finite.
void check_task(const TdTask& t) {
  td_check_count(t);
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

// The k-th smallest (1 <= k <= n) of a row's keys by 4 rounds of 8-bit radix counting, and how
// many keys equal to it are targeted. After each round only the keys in the chosen bin go on
// (copied aside without a branch). Counting goes to 4 interleaved histograms: weights share few
// exponents, and increments of one counter in a row would wait on each other. `keys` and
// `spare` are overwritten.
RowThreshold radix_select(std::vector<uint32_t>& keys, std::vector<uint32_t>& spare, int64_t n,
                          int64_t k) {
  uint32_t prefix = 0;
  int64_t remaining = k;
  uint32_t* cur = keys.data();
  uint32_t* next = spare.data();
  for (int shift = 24; shift >= 0; shift -= 8) {
    uint32_t hist[4][256] = {};
    for (int64_t c = 0; c < n; ++c) ++hist[c & 3][(cur[c] >> shift) & 255u];
    uint32_t d = 0;
    for (;; ++d) {
      const int64_t count = int64_t{hist[0][d]} + hist[1][d] + hist[2][d] + hist[3][d];
      if (remaining <= count) break;
      remaining -= count;
    }
    prefix |= d << shift;
    if (shift == 0) break;
    int64_t kept = 0;
    for (int64_t c = 0; c < n; ++c) {
      next[kept] = cur[c];
      kept += ((cur[c] >> shift) & 255u) == d;
    }
    std::swap(cur, next);
    n = kept;
  }
  return {prefix, remaining};
}

// One row of a weight-mode task: select, draw, write W' and the mask, without data-dependent
// branches in the per-entry loop (a random targeted set would mispredict every other one). The
// row's Philox blocks are drawn first, in a loop of independent calls the CPU can overlap.
void weight_row(const TdTask& t, int64_t r, uint64_t seed, std::vector<uint32_t>& keys,
                std::vector<uint32_t>& spare, std::vector<Philox4>& blocks) {
  const int64_t n = t.n, base = r * n;
  const float* w = t.w + base;
  // key < T is targeted, and of key == T the first `ties`: k = 0 gives T = 0 and no ties;
  // k = n gives a T above every key.
  RowThreshold th{0, 0};
  if (t.k == n) {
    th = {0xffffffffu, 0};
  } else if (t.k > 0) {
    for (int64_t c = 0; c < n; ++c) keys[c] = magnitude_key(bits_of(w[c]));
    th = radix_select(keys, spare, n, t.k);
  }
  const bool draws = t.k > 0 && t.drop_threshold > 0;
  const uint64_t first_block = static_cast<uint64_t>(base) >> 2;
  if (draws)
    for (uint64_t b = first_block; b <= static_cast<uint64_t>(base + n - 1) >> 2; ++b)
      blocks[b - first_block] = philox_block(seed, t.stream, b);
  uint32_t* mask = t.mask + r * mask_words_per_row(n);
  float* out = t.w_out + base;
  int64_t ties_seen = 0;
  uint32_t word = 0;
  for (int64_t c = 0; c < n; ++c) {
    const uint64_t i = static_cast<uint64_t>(base + c);
    const uint32_t bits = bits_of(w[c]), key = magnitude_key(bits);
    const bool tie = key == th.T;
    const bool targeted = (key < th.T) | (tie & (ties_seen < th.ties));  // bitwise: no branch
    ties_seen += tie;
    const uint32_t draw = draws ? blocks[(i >> 2) - first_block].v[i & 3] : 0xffffffffu;
    const bool dropped = targeted & bernoulli_from_u32(draw, t.drop_threshold);
    const uint32_t keep = static_cast<uint32_t>(dropped) - 1u;  // all ones when kept
    const uint32_t b = bits & keep;                              // dropped: +0.0
    std::memcpy(out + c, &b, 4);
    word |= (keep & 1u) << (c % 32);
    if (c % 32 == 31 || c == n - 1) {
      mask[c / 32] = word;
      word = 0;
    }
  }
}

}  // namespace

void targeted_dropout_cpu(const TdTask& t, uint64_t seed) {
  if (t.unit) return targeted_dropout_reference(t, seed);  // ranking rows is cheap
  check_task(t);
  std::vector<uint32_t> keys(static_cast<size_t>(t.n)), spare(static_cast<size_t>(t.n));
  std::vector<Philox4> blocks(static_cast<size_t>(t.n / 4 + 2));
  for (int64_t r = 0; r < t.rows; ++r) weight_row(t, r, seed, keys, spare, blocks);
}

void td_mask_grad_cpu(const float* g, const uint32_t* mask, int64_t rows, int64_t n, float* out) {
  const int64_t words = mask_words_per_row(n);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < n; ++c) {
      // The kept bit widened to a bit mask: dropped entries become +0.0, with no branch.
      const uint32_t keep = 0u - ((mask[r * words + c / 32] >> (c % 32)) & 1u);
      const uint32_t b = bits_of(g[r * n + c]) & keep;
      std::memcpy(out + r * n + c, &b, 4);
    }
}

}  // namespace tdrop
