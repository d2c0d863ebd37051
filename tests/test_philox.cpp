// Philox4x32-10 known-answer tests (the published Random123 kat_vectors) and the properties
// tdrop's dropout relies on: host and device formulas agree, streams are independent.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "core/philox.h"

using tdrop::Philox4;
using tdrop::philox4x32_10;

static void expect_block(Philox4 ctr, uint32_t k0, uint32_t k1, Philox4 want) {
  Philox4 got = philox4x32_10(ctr, k0, k1);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got.v[i], want.v[i]) << "lane " << i;
}

TEST(Philox, Random123KnownAnswerZero) {
  expect_block({{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}});
}

TEST(Philox, Random123KnownAnswerOnes) {
  expect_block({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu,
               {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}});
}

TEST(Philox, Random123KnownAnswerPi) {
  expect_block({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u,
               {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}});
}

// The round keys precomputed once (as kernels take the seed) give the published block, and the
// same blocks as the seed given whole (split into its two key words) on random counters and seeds.
TEST(Philox, PrecomputedRoundKeysGiveTheSameBlocks) {
  const uint64_t pi_seed = 0xa4093822ull | (0x299f31d0ull << 32);
  const Philox4 pi = philox4x32_10({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
                                   tdrop::philox_keys(pi_seed));
  const uint32_t want[4] = {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(pi.v[i], want[i]) << "lane " << i;
  std::mt19937_64 rng(std::random_device{}());
  for (int trial = 0; trial < 1000; ++trial) {
    const uint64_t seed = rng(), stream = rng(), block = rng();
    const Philox4 a = tdrop::philox_block(seed, stream, block);
    const Philox4 b = tdrop::philox_block(tdrop::philox_keys(seed), stream, block);
    for (int i = 0; i < 4; ++i)
      ASSERT_EQ(a.v[i], b.v[i]) << "seed " << seed << " stream " << stream << " block " << block;
  }
}

// Round 0's stream half computed once (as the fused kernel's rows draw) gives the published
// block, and the blocks of philox_block on random seeds, streams and blocks, the high words of
// both included.
TEST(Philox, StreamHeadGivesTheSameBlocks) {
  const tdrop::PhiloxKeys pi_keys = tdrop::philox_keys(0xa4093822ull | (0x299f31d0ull << 32));
  const uint64_t pi_stream = 0x13198a2eull | (0x03707344ull << 32);
  const uint64_t pi_block = 0x243f6a88ull | (0x85a308d3ull << 32);
  const Philox4 pi =
      tdrop::philox_block(pi_keys, tdrop::philox_stream_head(pi_keys, pi_stream), pi_block);
  const uint32_t want[4] = {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(pi.v[i], want[i]) << "lane " << i;
  std::mt19937_64 rng(std::random_device{}());
  for (int trial = 0; trial < 1000; ++trial) {
    const uint64_t seed = rng(), stream = rng(), block = rng();
    const tdrop::PhiloxKeys keys = tdrop::philox_keys(seed);
    const Philox4 a = tdrop::philox_block(seed, stream, block);
    const Philox4 b = tdrop::philox_block(keys, tdrop::philox_stream_head(keys, stream), block);
    for (int i = 0; i < 4; ++i)
      ASSERT_EQ(a.v[i], b.v[i]) << "seed " << seed << " stream " << stream << " block " << block;
  }
}

TEST(Philox, UniformIsInUnitIntervalWithRightMean) {
  double sum = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    float u = tdrop::philox_uniform(7, 3, i);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
  }
  // mean of U(0,1): 0.5 with std 1/sqrt(12 n) ~ 0.00065; 6 sigma bound
  EXPECT_NEAR(sum / n, 0.5, 0.004);
}

TEST(Philox, StreamsAndSeedsDiffer) {
  std::set<uint32_t> seen;
  for (uint64_t s = 0; s < 4; ++s)
    for (uint64_t st = 0; st < 4; ++st) seen.insert(tdrop::philox_u32(s, st, 0));
  EXPECT_EQ(seen.size(), 16u);
}

TEST(Philox, BernoulliThresholdEdges) {
  EXPECT_EQ(tdrop::bernoulli_threshold(0.0f), 0u);
  EXPECT_EQ(tdrop::bernoulli_threshold(1.0f), 1u << 24);
  EXPECT_EQ(tdrop::bernoulli_threshold(0.5f), 1u << 23);
  EXPECT_FALSE(tdrop::bernoulli_from_u32(0, 0));           // p = 0 never fires
  EXPECT_TRUE(tdrop::bernoulli_from_u32(0xffffffffu, 1u << 24));  // p = 1 always fires
}

TEST(Philox, NextBelowIsUniformAndInRange) {
  tdrop::PhiloxHost rng(11, 0);
  int counts[7] = {0};
  const int n = 70000;
  for (int i = 0; i < n; ++i) {
    uint64_t x = rng.next_below(7);
    ASSERT_LT(x, 7u);
    ++counts[x];
  }
  for (int c : counts) EXPECT_NEAR(c, n / 7.0, 6 * std::sqrt(n / 7.0));
}
