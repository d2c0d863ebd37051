// Targeted dropout, CPU reference: the exact semantics of DESIGN.md, checked property by
// property, plus the statistics of the Bernoulli draws.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "tests/expect_error.h"
#include "tests/grad_check.h"
#include "tests/td_test_util.h"

namespace tdrop::testing {
namespace {

// Independent statement of the targeted set: entry c of row r is targeted iff fewer than k
// entries of the row precede it in (key, index) order.
std::vector<uint8_t> brute_force_targeted(const std::vector<float>& w, int64_t rows, int64_t n,
                                          int64_t k) {
  std::vector<uint8_t> t(w.size(), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < n; ++c) {
      const uint32_t kc = magnitude_key(to_bits(w[r * n + c]));
      int64_t before = 0;
      for (int64_t j = 0; j < n; ++j) {
        const uint32_t kj = magnitude_key(to_bits(w[r * n + j]));
        before += kj < kc || (kj == kc && j < c);
      }
      t[r * n + c] = before < k;
    }
  return t;
}

void expect_consistent(const std::vector<float>& w, int64_t rows, int64_t n, const TdOutput& o) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      const size_t i = static_cast<size_t>(r * n + c);
      if (mask_bit(o.mask, n, r, c)) {
        ASSERT_EQ(to_bits(o.w_out[i]), to_bits(w[i])) << "kept entry changed at " << r << "," << c;
      } else {
        ASSERT_EQ(to_bits(o.w_out[i]), 0u) << "dropped entry is not +0.0 at " << r << "," << c;
      }
    }
    for (int64_t c = n; c < mask_words_per_row(n) * 32; ++c)
      ASSERT_FALSE(mask_bit(o.mask, n, r, c)) << "padding bit set in row " << r;
  }
}

class TdReference : public ::testing::TestWithParam<WeightKind> {};

TEST_P(TdReference, DropsOnlyTargetedEntriesAndAlphaOneDropsAllOfThem) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (auto [rows, n] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 7}, {5, 33}, {2, 100}}) {
    const std::vector<float> w = make_weights(rows * n, GetParam(), rng);
    for (double gamma : {0.0, 0.1, 0.5, 0.99, 1.0}) {
      const int64_t k = td_count(gamma, n);
      const std::vector<uint8_t> targeted = brute_force_targeted(w, rows, n, k);
      TdOutput o;
      targeted_dropout_reference(make_task(w, rows, n, gamma, 1.0f, false, 9, o), seed);
      expect_consistent(w, rows, n, o);
      for (int64_t i = 0; i < rows * n; ++i)  // alpha = 1: dropped exactly when targeted
        ASSERT_EQ(!mask_bit(o.mask, n, i / n, i % n), targeted[i] != 0)
            << "gamma " << gamma << " entry " << i;
      // alpha = 0.5: a targeted entry is dropped exactly when number i (= r * n + c) of the
      // layer's Philox stream says so (DESIGN: keyed by seed, step, layer and element index).
      TdOutput half;
      targeted_dropout_reference(make_task(w, rows, n, gamma, 0.5f, false, 9, half), seed);
      expect_consistent(w, rows, n, half);
      const uint32_t thr = bernoulli_threshold(0.5f);
      for (int64_t i = 0; i < rows * n; ++i) {
        const bool drop =
            targeted[i] && bernoulli_from_u32(philox_u32(seed, 9, static_cast<uint64_t>(i)), thr);
        ASSERT_EQ(!mask_bit(half.mask, n, i / n, i % n), drop) << "entry " << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(WeightKinds, TdReference,
                         ::testing::Values(WeightKind::Normal, WeightKind::FewValues,
                                           WeightKind::AllZero, WeightKind::SignedZeros,
                                           WeightKind::Denormals, WeightKind::Mixed,
                                           WeightKind::OneBinade),
                         [](const auto& info) {
                           std::string s = kind_name(info.param);
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

TEST(TdReferenceSemantics, TiesGoToTheLowerColumn) {
  // Row: 5 equal magnitudes (with both signs and a -0/+0 pair elsewhere); k = 3 must take
  // the three lowest columns among the ties after every strictly smaller entry.
  const std::vector<float> w = {0.5f, -0.5f, 0.0f, 0.5f, -0.0f, 0.5f, 0.5f, 2.0f};
  TdOutput o;
  targeted_dropout_reference(make_task(w, 1, 8, 4.0 / 8.0, 1.0f, false, 1, o), 123);
  // Order: -0.0 (col 2, key 0) and -0.0 (col 4, key 0) first, then ties of 0.5 at cols 0, 1...
  const std::vector<bool> kept = {false, false, false, true, false, true, true, true};
  for (int c = 0; c < 8; ++c) EXPECT_EQ(mask_bit(o.mask, 8, 0, c), kept[c]) << "column " << c;
  EXPECT_EQ(to_bits(o.w_out[1]), 0u);             // dropped -0.5 becomes +0.0
  EXPECT_EQ(to_bits(o.w_out[3]), to_bits(0.5f));  // kept entries untouched
}

TEST(TdReferenceSemantics, KeptNegativeZeroKeepsItsSign) {
  const std::vector<float> w = {-0.0f, 1.0f, -0.0f, 3.0f};
  TdOutput o;
  targeted_dropout_reference(make_task(w, 1, 4, 0.0, 1.0f, false, 1, o), 1);
  EXPECT_EQ(to_bits(o.w_out[0]), 0x80000000u);
  EXPECT_EQ(to_bits(o.w_out[2]), 0x80000000u);
}

// Order by magnitude: 0.0 (column 2), -denormal 3 (column 3), denormal 5 (column 1), then the
// normals. Each k takes a prefix of that order, on both CPU paths: a denormal flushed to zero
// (or ranked below it) would change the sets of k = 1 and k = 2.
TEST(TdReferenceSemantics, DenormalsRankBelowNormalsAndAboveZero) {
  const std::vector<float> w = {1e-30f, from_bits(5), 0.0f, from_bits(0x80000003u), 1.0f};
  const std::vector<std::vector<bool>> kept_for_k = {{true, true, false, true, true},
                                                     {true, true, false, false, true},
                                                     {true, false, false, false, true}};
  for (int64_t k = 1; k <= 3; ++k)
    for (bool training_path : {false, true}) {
      SCOPED_TRACE("k " + std::to_string(k) + (training_path ? ", training path" : ""));
      TdOutput o;
      const TdTask t = make_task(w, 1, 5, static_cast<double>(k) / 5.0, 1.0f, false, 1, o);
      if (training_path) targeted_dropout_cpu(t, 1);
      else targeted_dropout_reference(t, 1);
      for (int c = 0; c < 5; ++c)
        EXPECT_EQ(mask_bit(o.mask, 5, 0, c), kept_for_k[k - 1][c]) << "column " << c;
    }
}

TEST(TdReferenceSemantics, GammaZeroAndAlphaZeroKeepEverything) {
  std::mt19937_64 rng(fresh_seed());
  const std::vector<float> w = make_weights(4 * 50, WeightKind::Normal, rng);
  for (auto [g, a] : {std::pair{0.0, 1.0f}, std::pair{1.0, 0.0f}}) {
    TdOutput o;
    targeted_dropout_reference(make_task(w, 4, 50, g, a, false, 1, o), 5);
    for (int64_t i = 0; i < 200; ++i) ASSERT_TRUE(mask_bit(o.mask, 50, i / 50, i % 50));
    EXPECT_EQ(o.w_out, w);
  }
}

TEST(TdReferenceSemantics, GammaOneAlphaOneDropsEverything) {
  std::mt19937_64 rng(fresh_seed());
  const std::vector<float> w = make_weights(3 * 37, WeightKind::Normal, rng);
  TdOutput o;
  targeted_dropout_reference(make_task(w, 3, 37, 1.0, 1.0f, false, 1, o), 5);
  for (float x : o.w_out) EXPECT_EQ(to_bits(x), 0u);
}

TEST(TdReferenceSemantics, TargetedCountIsFloorOfGammaN) {
  EXPECT_EQ(td_count(0.75, 300), 225);
  EXPECT_EQ(td_count(0.5, 7), 3);
  EXPECT_EQ(td_count(0.99, 10), 9);
  EXPECT_EQ(td_count(1.0, 10), 10);
  EXPECT_EQ(td_count(0.0, 10), 0);
  expect_error([] { td_count(1.5, 10); }, {"targeted dropout", "gamma 1.5 is outside [0, 1]"});
  expect_error([] { td_count(-0.1, 10); }, {"targeted dropout", "gamma -0.1 is outside [0, 1]"});
  // Just below an integer by more than rounding: still the floor.
  EXPECT_EQ(td_count(0.5699, 300), 170);
  EXPECT_EQ(td_count(0.9999999, 1000), 999);
}

// k is the floor of the decimal gamma times n, although the double nearest a decimal is a little
// below it for many of them (0.57 * 300 = 170.99999999999997 in doubles).
TEST(TdReferenceSemantics, TargetedCountOfEveryDecimalGamma) {
  for (int64_t thousandths = 0; thousandths <= 1000; ++thousandths) {
    const double gamma = std::stod("0." + std::to_string(1000 + thousandths).substr(1)) +
                         (thousandths == 1000 ? 1.0 : 0.0);
    for (int64_t n : {1, 7, 10, 100, 300, 400, 784, 1000, 4608, 65536})
      ASSERT_EQ(td_count(gamma, n), thousandths * n / 1000) << "gamma " << gamma << ", n " << n;
  }
}

TEST(TdReferenceSemantics, NonFiniteWeightNamesTheLayer) {
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    std::vector<float> w(12, 1.0f);
    w[7] = bad;
    TdOutput o;
    TdTask t = make_task(w, 3, 4, 0.5, 0.5f, false, 1, o);
    t.name = "layers.3";
    try {
      targeted_dropout_reference(t, 1);
      FAIL() << "expected an error for " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("layers.3"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("row 1, column 3"), std::string::npos) << e.what();
    }
  }
}

// The share of targeted entries that get dropped is Binomial(targeted, alpha): within 6 sigma.
TEST(TdReferenceStatistics, DroppedShareMatchesAlpha) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 64, n = 1000;
  const std::vector<float> w = make_weights(rows * n, WeightKind::Normal, rng);
  for (float alpha : {0.1f, 0.5f, 0.66f, 0.9f}) {
    TdOutput o;
    targeted_dropout_reference(make_task(w, rows, n, 0.5, alpha, false, 77, o), seed);
    int64_t dropped = 0;
    for (int64_t i = 0; i < rows * n; ++i) dropped += !mask_bit(o.mask, n, i / n, i % n);
    const double targeted = rows * 500.0;
    const double sigma = std::sqrt(targeted * alpha * (1 - alpha));
    EXPECT_NEAR(dropped, targeted * alpha, 6 * sigma) << "alpha " << alpha;
  }
}

TEST(TdReferenceStatistics, DrawsDifferBetweenStepsAndRepeatForOneSeed) {
  std::mt19937_64 rng(fresh_seed());
  const std::vector<float> w = make_weights(8 * 256, WeightKind::Normal, rng);
  TdOutput a, b, c;
  targeted_dropout_reference(make_task(w, 8, 256, 0.5, 0.5f, false, td_stream(10, 2), a), 42);
  targeted_dropout_reference(make_task(w, 8, 256, 0.5, 0.5f, false, td_stream(10, 2), b), 42);
  targeted_dropout_reference(make_task(w, 8, 256, 0.5, 0.5f, false, td_stream(11, 2), c), 42);
  EXPECT_EQ(a.mask, b.mask);
  EXPECT_EQ(a.w_out, b.w_out);
  EXPECT_NE(a.mask, c.mask);
  TdOutput d;  // another layer at the same step draws differently too
  targeted_dropout_reference(make_task(w, 8, 256, 0.5, 0.5f, false, td_stream(10, 3), d), 42);
  EXPECT_NE(a.mask, d.mask);
  TdOutput e;  // and another seed, same step and layer
  targeted_dropout_reference(make_task(w, 8, 256, 0.5, 0.5f, false, td_stream(10, 2), e), 43);
  EXPECT_NE(a.mask, e.mask);
}

// Each (step, layer) pair has a stream of its own: the 65536 layer slots of one step never
// reach into the next step's, at the edges of the slots included.
TEST(TdReferenceStatistics, StepsAndLayersNeverShareAStream) {
  for (uint64_t step : {uint64_t{0}, uint64_t{1}, uint64_t{12345}, (uint64_t{1} << 40) + 3}) {
    EXPECT_NE(td_stream(step, 65535), td_stream(step + 1, 0)) << step;
    EXPECT_NE(td_stream(step, 0), td_stream(step, 65535)) << step;
    EXPECT_EQ(td_stream(step + 1, 0) - td_stream(step, 65535), 1u) << step;  // the next one
  }
}

TEST(TdReferenceUnit, TargetsTheRowsOfSmallestNormTiesByIndex) {
  // Rows 2 and 3 share the smallest norm (0.01), row 0 is next (0.5), then rows 4 and 1.
  const int64_t n = 3;
  const std::vector<float> w = {0.5f, 0.5f, 0.0f,  2.0f, 0.0f, 0.0f, 0.1f, 0.0f,
                                0.0f, 0.0f, 0.0f,  -0.1f, 1.0f, 1.0f, 1.0f};
  // k = floor(0.6 * 5) = 3 takes both tied rows and row 0; k = floor(0.2 * 5) = 1 splits the
  // tie: only the lower row, 2, is targeted.
  for (auto [gamma, row_kept] :
       {std::pair{0.6, std::vector<bool>{false, true, false, false, true}},
        std::pair{0.2, std::vector<bool>{true, true, false, true, true}}}) {
    SCOPED_TRACE(gamma);
    TdOutput o;
    targeted_dropout_reference(make_task(w, 5, n, gamma, 1.0f, true, 3, o), 9);
    for (int64_t r = 0; r < 5; ++r)
      for (int64_t c = 0; c < n; ++c) EXPECT_EQ(mask_bit(o.mask, n, r, c), row_kept[r]) << r;
  }
}

TEST(TdReferenceUnit, OneDrawPerRowUnlessPerWeight) {
  std::mt19937_64 rng(fresh_seed());
  const int64_t rows = 200, n = 16;
  const std::vector<float> w = make_weights(rows * n, WeightKind::Normal, rng);
  TdOutput o, pw;
  targeted_dropout_reference(make_task(w, rows, n, 1.0, 0.5f, true, 3, o), 11);
  int64_t dropped_rows = 0, partial_rows = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t kept = 0;
    for (int64_t c = 0; c < n; ++c) kept += mask_bit(o.mask, n, r, c);
    ASSERT_TRUE(kept == 0 || kept == n) << "row " << r << " partly dropped";
    dropped_rows += kept == 0;
  }
  EXPECT_NEAR(dropped_rows, 100, 6 * std::sqrt(50.0));
  targeted_dropout_reference(make_task(w, rows, n, 1.0, 0.5f, true, 3, pw, true), 11);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t kept = 0;
    for (int64_t c = 0; c < n; ++c) kept += mask_bit(pw.mask, n, r, c);
    partial_rows += kept > 0 && kept < n;
  }
  EXPECT_GT(partial_rows, 150);  // per-entry draws: almost every row is partly dropped
}

// Unit mode from the definition: rows ranked by their squared norm (ties by row), the first k
// targeted, a targeted row dropped when number r of the stream says so (or, with per-weight
// draws, entry (r, c) when number r * n + c does). Both CPU paths.
TEST(TdReferenceUnit, DrawsFollowTheDefinition) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 64, n = 10, k = 32;
  const std::vector<float> w = make_weights(rows * n, WeightKind::Normal, rng);
  std::vector<std::pair<double, int64_t>> by_norm;
  for (int64_t r = 0; r < rows; ++r) by_norm.push_back({unit_norm_sq_reference(&w[r * n], n), r});
  std::sort(by_norm.begin(), by_norm.end());
  std::vector<bool> targeted(rows, false);
  for (int64_t j = 0; j < k; ++j) targeted[by_norm[j].second] = true;
  const uint32_t thr = bernoulli_threshold(0.5f);
  for (bool per_weight : {false, true})
    for (bool training_path : {false, true}) {
      SCOPED_TRACE(std::string(per_weight ? "per weight" : "per row") +
                   (training_path ? ", training path" : ""));
      TdOutput o;
      const TdTask t = make_task(w, rows, n, 0.5, 0.5f, true, 21, o, per_weight);
      if (training_path) targeted_dropout_cpu(t, seed);
      else targeted_dropout_reference(t, seed);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < n; ++c) {
          const uint64_t index = static_cast<uint64_t>(per_weight ? r * n + c : r);
          const bool drop = targeted[r] && bernoulli_from_u32(philox_u32(seed, 21, index), thr);
          ASSERT_EQ(!mask_bit(o.mask, n, r, c), drop) << "row " << r << ", column " << c;
        }
    }
}

TEST(TdReferenceUnit, CanonicalNormMatchesAPlainSumClosely) {
  std::mt19937_64 rng(fresh_seed());
  const std::vector<float> w = make_weights(10007, WeightKind::Normal, rng);
  double plain = 0;
  for (float x : w) plain += static_cast<double>(x) * x;
  EXPECT_NEAR(unit_norm_sq_reference(w.data(), 10007), plain, 1e-9 * plain);
}

// The CPU training path against the reference, bit for bit, over the shapes, weight kinds,
// gamma and alpha of the CUDA sweep (rows whose start is not a multiple of 4, so Philox blocks
// straddle rows; ties; all zeros; -0.0; denormals), both modes. The last two shapes are large
// enough for the training path to split their rows over threads (a range holds at least 64K
// entries: [2, 70001] gives one row per range, [600, 257] two ranges of 300 rows).
TEST(TdCpuPath, MatchesReferenceBitForBit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const WeightKind kinds[] = {WeightKind::Normal,    WeightKind::FewValues, WeightKind::AllZero,
                              WeightKind::SignedZeros, WeightKind::Denormals, WeightKind::Mixed,
                              WeightKind::OneBinade};
  int i = 0;
  auto check = [&](int64_t rows, int64_t n, WeightKind kind, double gamma, float alpha,
                   bool unit) {
    SCOPED_TRACE("[" + std::to_string(rows) + ", " + std::to_string(n) + "] " +
                 kind_name(kind) + " gamma " + std::to_string(gamma) + " alpha " +
                 std::to_string(alpha) + (unit ? " unit" : " weight"));
    const std::vector<float> w = make_weights(rows * n, kind, rng);
    TdOutput want, got;
    const uint64_t stream = td_stream(static_cast<uint64_t>(i), 3);
    targeted_dropout_reference(make_task(w, rows, n, gamma, alpha, unit, stream, want), seed);
    targeted_dropout_cpu(make_task(w, rows, n, gamma, alpha, unit, stream, got), seed);
    ASSERT_EQ(got.mask, want.mask);
    for (size_t j = 0; j < w.size(); ++j)
      ASSERT_EQ(to_bits(got.w_out[j]), to_bits(want.w_out[j])) << "entry " << j;
  };
  for (auto [rows, n] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {3, 7}, {5, 33}, {17, 100}, {7, 129}, {40, 576}, {6, 1024}, {3, 4099}, {2, 70001},
           {600, 257}})
    for (double gamma : {0.0, 0.01, 0.5, 0.99, 1.0})
      for (float alpha : {0.0f, 0.5f, 1.0f})
        for (bool unit : {false, true}) {
          const WeightKind kind = kinds[i++ % 7];
          check(rows, n, kind, gamma, alpha, unit);
          if (::testing::Test::HasFatalFailure()) return;
        }
  // Rows of a million entries: one alone, and two that go to different CPU threads where
  // there are several.
  check(1, 1000000, WeightKind::Mixed, 0.75, 0.66f, false);
  check(2, 1000000, WeightKind::Normal, 0.5, 0.5f, true);
  if (::testing::Test::HasFatalFailure()) return;
  // Rows whose k-th key ends a run of ties: every key of its value is targeted, none above.
  for (double gamma : {36.0 / 64, 33.0 / 64, 1.0 / 64})
    for (int64_t n : {64, 4096}) {
      ++i;
      check(3, n, WeightKind::Ladder, gamma, 0.5f, false);
      if (::testing::Test::HasFatalFailure()) return;
    }
}

// Rows whose keys differ only in a few bits: one digit of the training path's radix select (the
// exponent, or the mantissa's top, middle or low bits) or bits straddling two digits, so that
// each round in turn decides with more keys left than the final sort takes, and T's ties are
// spread through the row.
TEST(TdCpuPath, KeysDifferingInOneDigitMatchReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  struct Digit {
    int shift, bits;
  };
  for (Digit digit : {Digit{23, 8}, Digit{15, 8}, Digit{7, 8}, Digit{0, 7}, Digit{0, 2}, Digit{0, 8},
                       Digit{6, 4}, Digit{14, 4}, Digit{22, 4}})
    for (int64_t n : {49, 50, 300, 1000})
      for (double gamma : {0.02, 0.5, 0.97}) {
        SCOPED_TRACE("digit at bit " + std::to_string(digit.shift) + ", n " + std::to_string(n) +
                     ", gamma " + std::to_string(gamma));
        const int64_t rows = 3;
        std::vector<float> w(static_cast<size_t>(rows * n));
        for (float& x : w) {
          // 1.5 with random bits in the digit; exponent digits stay finite (below 255).
          uint32_t bits = 0x3fc00000u & ~(((1u << digit.bits) - 1u) << digit.shift);
          const uint32_t max_digit = digit.shift == 23 ? 254u : (1u << digit.bits) - 1u;
          bits |= static_cast<uint32_t>(rng() % (max_digit + 1)) << digit.shift;
          bits |= static_cast<uint32_t>(rng() & 1u) << 31;
          std::memcpy(&x, &bits, 4);
        }
        TdOutput want, got;
        targeted_dropout_reference(make_task(w, rows, n, gamma, 0.5f, false, 5, want), seed);
        targeted_dropout_cpu(make_task(w, rows, n, gamma, 0.5f, false, 5, got), seed);
        ASSERT_EQ(got.mask, want.mask);
        for (size_t j = 0; j < w.size(); ++j)
          ASSERT_EQ(to_bits(got.w_out[j]), to_bits(want.w_out[j])) << "entry " << j;
      }
}

// Empty layers (no rows, or rows of no entries) are no work, not an error, on both CPU paths:
// nothing is written (the buffers given hold a sentinel); a row of one entry is targeted whole
// at gamma 1 and not at all below.
TEST(TdCpuPath, EmptyAndOneEntryRows) {
  for (auto [rows, n] : std::vector<std::pair<int64_t, int64_t>>{{0, 5}, {3, 0}, {0, 0}})
    for (bool unit : {false, true})
      for (bool training_path : {false, true}) {
        SCOPED_TRACE(shape_str({rows, n}) + (unit ? " unit" : " weight") +
                     (training_path ? ", training path" : ""));
        const std::vector<float> w(1, 2.0f);
        TdOutput o;
        TdTask t = make_task(w, rows, n, 0.5, 1.0f, unit, 1, o);
        float w_out = -1.0f;
        uint32_t mask = 0xdeadbeefu;
        t.w_out = &w_out;
        t.mask = &mask;
        EXPECT_NO_THROW(training_path ? targeted_dropout_cpu(t, 3)
                                      : targeted_dropout_reference(t, 3));
        EXPECT_EQ(w_out, -1.0f);
        EXPECT_EQ(mask, 0xdeadbeefu);
      }
  const std::vector<float> w = {0.25f, -3.0f, 0.0f};
  for (double gamma : {0.99, 1.0}) {
    TdOutput o;
    targeted_dropout_cpu(make_task(w, 3, 1, gamma, 1.0f, false, 1, o), 3);
    for (int r = 0; r < 3; ++r) {
      EXPECT_EQ(o.mask[r], gamma == 1.0 ? 0u : 1u) << "row " << r;
      EXPECT_EQ(to_bits(o.w_out[r]), gamma == 1.0 ? 0u : to_bits(w[r])) << "row " << r;
    }
  }
}

TEST(TdCpuPath, NonFiniteWeightNamesTheLayer) {
  std::vector<float> w(30, 0.5f);
  w[17] = -INFINITY;
  TdOutput o;
  TdTask t = make_task(w, 3, 10, 0.5, 0.5f, false, 1, o);
  t.name = "blocks.2.conv1";
  try {
    targeted_dropout_cpu(t, 1);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.2.conv1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("row 1, column 7"), std::string::npos) << e.what();
  }
}

// Kept entries pass their gradient bit for bit (-0.0, NaN, denormals included), dropped ones
// become +0.0; rows shorter than 8, not a multiple of 8 or 32, and (the last shape) enough entries
// for the rows to be split over threads (two ranges of 300 rows).
TEST(TdMaskGrad, ZeroesExactlyTheDroppedEntries) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (auto [rows, n] : std::vector<std::pair<int64_t, int64_t>>{
           {0, 5}, {3, 0}, {3, 45}, {5, 7}, {2, 1}, {4, 32}, {6, 40}, {3, 1000}, {600, 257}}) {
    SCOPED_TRACE("[" + std::to_string(rows) + ", " + std::to_string(n) + "]");
    const std::vector<float> w = make_weights(rows * n, WeightKind::Normal, rng);
    TdOutput o;
    targeted_dropout_reference(make_task(w, rows, n, 0.5, 0.5f, false, 3, o), 1);
    std::vector<float> g = make_weights(rows * n, WeightKind::Mixed, rng);
    if (!g.empty()) g[0] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> out(g.size(), 1.0f);
    td_mask_grad_cpu(g.data(), o.mask.data(), rows, n, out.data());
    for (int64_t i = 0; i < rows * n; ++i)
      ASSERT_EQ(to_bits(out[i]), mask_bit(o.mask, n, i / n, i % n) ? to_bits(g[i]) : 0u)
          << "entry " << i;
  }
}

// Where the fused kernel puts short rows: Auto gives them warps only when they fill a block per
// multiprocessor (rows rounded up to blocks of 8 per layer, as the kernel's table counts them);
// long rows, unit-mode layers and empty layers count for nothing; Warp and Block are obeyed.
TEST(TdFusedRowPlacement, AutoGivesWarpsOnlyWhenTheyFillTheDevice) {
  auto layer = [](int64_t rows, int64_t n, bool unit = false) {
    TdTask t;
    t.rows = rows;
    t.n = n;
    t.unit = unit;
    return t;
  };
  const int sms = 132;
  // The MLP's targeted layers (400 rows: 50 blocks) and ResNet-32's (1120 rows: 140 blocks).
  const std::vector<TdTask> mlp = {layer(300, 784), layer(100, 300)};
  EXPECT_FALSE(td_short_rows_on_warps(mlp, TdRows::Auto, sms));
  std::vector<TdTask> resnet;
  for (int64_t c : {16, 32, 64})
    for (int i = 0; i < 10; ++i) resnet.push_back(layer(c, 9 * c));
  EXPECT_TRUE(td_short_rows_on_warps(resnet, TdRows::Auto, sms));
  // The edge: 131 blocks stay on blocks, 132 go to warps; 9 rows are two blocks, not one.
  const std::vector<TdTask> blocks131 = {layer(131 * 8, 1024)};
  const std::vector<TdTask> blocks132 = {layer(131 * 8 + 1, 1024)};
  EXPECT_FALSE(td_short_rows_on_warps(blocks131, TdRows::Auto, sms));
  EXPECT_TRUE(td_short_rows_on_warps(blocks132, TdRows::Auto, sms));
  std::vector<TdTask> nines(66, layer(9, 10));
  EXPECT_TRUE(td_short_rows_on_warps(nines, TdRows::Auto, sms));
  nines.pop_back();
  EXPECT_FALSE(td_short_rows_on_warps(nines, TdRows::Auto, sms));
  // Rows of 1025 entries, unit-mode layers and empty layers are not short rows.
  const std::vector<TdTask> none = {layer(100000, 1025), layer(100000, 100, /*unit=*/true),
                                    layer(0, 100), layer(100000, 0)};
  EXPECT_FALSE(td_short_rows_on_warps(none, TdRows::Auto, 1));
  // Forced placements ignore the count (Group puts short rows on groups of warps, not warps).
  EXPECT_TRUE(td_short_rows_on_warps(mlp, TdRows::Warp, sms));
  EXPECT_FALSE(td_short_rows_on_warps(resnet, TdRows::Block, sms));
  EXPECT_FALSE(td_short_rows_on_warps(resnet, TdRows::Group, sms));
}

}  // namespace
}  // namespace tdrop::testing
