// CPU reference for targeted dropout, written for clarity: order entries by (key, index) packed
// into one 64-bit number, select the k smallest, draw. The CUDA kernels must reproduce its
// output bit for bit. It is also the CPU training path, so selection is nth_element (linear
// time) and Philox blocks are reused across the four entries they cover.
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

namespace {

uint32_t bits_of(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}

void check_finite(const TdTask& t) {
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
  TDROP_CHECK(t.k >= 0 && t.k <= (t.unit ? t.rows : t.n), "targeted dropout: layer '", t.name,
              "': k = ", t.k, " out of range for [", t.rows, ", ", t.n, "]");
  check_finite(t);
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

void td_mask_grad_cpu(const float* g, const uint32_t* mask, int64_t rows, int64_t n, float* out) {
  const int64_t words = mask_words_per_row(n);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < n; ++c)
      out[r * n + c] = (mask[r * words + c / 32] >> (c % 32)) & 1u ? g[r * n + c] : 0.0f;
}

}  // namespace tdrop
