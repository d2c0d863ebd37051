// Helpers for targeted-dropout tests: weight generators with the hard cases (ties, zeros,
// negative zeros, denormals) and a runner that returns W' and the mask as plain vectors.
#pragma once
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/targeted_dropout.h"

namespace tdrop::testing {

// OneBinade: magnitudes in [1, 1.125), all sharing their top 11 key bits (the fused kernel's
// first radix digit), with distinct lower bits: the whole row is one first-digit bin.
// Ladder: entry i is +-(i % 64) / 64, so a row of a multiple of 64 entries holds each of 64
// magnitudes equally often and a gamma of j/64 puts the k-th key at the end of a run of ties.
enum class WeightKind { Normal, FewValues, AllZero, SignedZeros, Denormals, Mixed, OneBinade, Ladder };
inline constexpr WeightKind kEveryWeightKind[] = {
    WeightKind::Normal,    WeightKind::FewValues, WeightKind::AllZero,   WeightKind::SignedZeros,
    WeightKind::Denormals, WeightKind::Mixed,     WeightKind::OneBinade, WeightKind::Ladder};

inline const char* kind_name(WeightKind k) {
  switch (k) {
    case WeightKind::Normal: return "normal";
    case WeightKind::FewValues: return "few-values";
    case WeightKind::AllZero: return "all-zero";
    case WeightKind::SignedZeros: return "signed-zeros";
    case WeightKind::Denormals: return "denormals";
    case WeightKind::Mixed: return "mixed";
    case WeightKind::OneBinade: return "one-binade";
    case WeightKind::Ladder: return "ladder";
  }
  return "?";
}

inline float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline uint32_t to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

inline std::vector<float> make_weights(int64_t count, WeightKind kind, std::mt19937_64& rng) {
  std::vector<float> w(static_cast<size_t>(count));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 5);
  for (size_t i = 0; i < w.size(); ++i) {
    float& x = w[i];
    switch (kind) {
      case WeightKind::Normal: x = normal(rng); break;
      case WeightKind::FewValues: x = 0.25f * static_cast<float>(pick(rng) - 2); break;  // heavy ties
      case WeightKind::AllZero: x = 0.0f; break;
      case WeightKind::SignedZeros: x = pick(rng) < 3 ? -0.0f : 0.0f; break;
      case WeightKind::Denormals:
        x = from_bits(static_cast<uint32_t>(rng() % 0x007fffffu) | (pick(rng) < 3 ? 0x80000000u : 0u));
        break;
      case WeightKind::OneBinade:
        x = from_bits(0x3f800000u | static_cast<uint32_t>(rng() & 0xfffffu) |
                      (pick(rng) < 3 ? 0x80000000u : 0u));
        break;
      case WeightKind::Ladder:
        x = static_cast<float>(i % 64) / 64.0f * (pick(rng) < 3 ? -1.0f : 1.0f);
        break;
      case WeightKind::Mixed: {
        const int p = pick(rng);
        x = p == 0 ? 0.0f : p == 1 ? -0.0f : p == 2 ? from_bits(1u + rng() % 1000u) : normal(rng);
        break;
      }
    }
  }
  return w;
}

struct TdOutput {
  std::vector<float> w_out;
  std::vector<uint32_t> mask;
};

inline TdTask make_task(const std::vector<float>& w, int64_t rows, int64_t n, double gamma,
                        float alpha, bool unit, uint64_t stream, TdOutput& out,
                        bool per_weight = false) {
  out.w_out.assign(w.size(), -1.0f);
  out.mask.assign(static_cast<size_t>(rows * mask_words_per_row(n)), 0xdeadbeefu);
  TdTask t;
  t.w = w.data();
  t.w_out = out.w_out.data();
  t.mask = out.mask.data();
  t.rows = rows;
  t.n = n;
  t.k = td_count(gamma, unit ? rows : n);
  t.drop_threshold = bernoulli_threshold(alpha);
  t.stream = stream;
  t.unit = unit;
  t.per_weight_draws = per_weight;
  t.name = "test_layer";
  return t;
}

inline bool mask_bit(const std::vector<uint32_t>& mask, int64_t n, int64_t r, int64_t c) {
  return (mask[static_cast<size_t>(r * mask_words_per_row(n) + c / 32)] >> (c % 32)) & 1u;
}

}  // namespace tdrop::testing
