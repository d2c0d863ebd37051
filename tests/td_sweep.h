// The sweep of targeted-dropout cases that every device path must match the CPU reference on,
// bit for bit: the CUDA tests (test_cuda_targeted_dropout.cpp) run it on a GPU, and the
// emulated ones (test_td_fused_emulated.cpp) run the fused kernels' code on the CPU.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "tests/td_test_util.h"

namespace tdrop::testing {

struct Case {
  int64_t rows, n;
  WeightKind kind;
  double gamma;
  float alpha;
  bool unit, per_weight;
};

inline std::vector<Case> sweep(bool unit) {
  std::vector<Case> cases;
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1, 1},     {3, 7},    {5, 33},   {17, 100}, {9, 128},  {7, 129},
      {40, 576},  {64, 1000}, {6, 1024}, {8, 4096}, {3, 4099}, {300, 784}};
  const WeightKind kinds[] = {WeightKind::Normal,      WeightKind::FewValues,
                              WeightKind::AllZero,     WeightKind::SignedZeros,
                              WeightKind::Denormals,   WeightKind::Mixed,
                              WeightKind::OneBinade,   WeightKind::Ladder};
  int i = 0;
  for (auto [rows, n] : shapes)
    for (double gamma : {0.0, 0.01, 0.5, 0.99, 1.0})
      for (float alpha : {0.0f, 0.5f, 1.0f})
        cases.push_back({rows, n, kinds[i++ % 8], gamma, alpha, unit, unit && (i % 4 == 0)});
  // The k-th key at the end of a run of ties (gamma j/64 on Ladder rows): a select that stops
  // early must stop exactly there.
  for (int64_t n : {576, 1024, 4096})
    for (double gamma : {36.0 / 64, 33.0 / 64})
      cases.push_back({4, n, WeightKind::Ladder, gamma, 0.5f, unit, false});
  // Rows whose keys all share the fused kernel's first radix digit: 2048 of them are set aside
  // on chip for the last pass, 2049 are not (the last pass then reads the whole row).
  for (int64_t n : {2048, 2049, 20000})
    for (double gamma : {0.01, 0.5, 0.99})
      cases.push_back({3, n, WeightKind::OneBinade, gamma, 0.5f, unit, false});
  // Rows of real weights staged on chip whose aligned whole steps leave a remainder for the
  // general ones (n % 4 == 0, n % 1024 != 0), at alpha 0.5 and 1.
  cases.push_back({3, 1500, WeightKind::Normal, 0.5, 0.5f, unit, false});
  cases.push_back({3, 3000, WeightKind::Normal, 0.5, 1.0f, unit, false});
  return cases;
}

}  // namespace tdrop::testing
