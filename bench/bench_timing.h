// What the benchmark binaries share: CUDA-event timing (a warm-up run, then the median of
// `reps` runs) and a main that registers the cases at run time.
#pragma once
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "core/cuda_check.h"

namespace tdrop {

// Median milliseconds of `fn` over `reps` CUDA-event-timed runs on cuda_stream().
template <class Fn>
float median_ms(Fn fn, int reps = 20) {
  cudaEvent_t a, b;
  TDROP_CUDA_CHECK(cudaEventCreate(&a));
  TDROP_CUDA_CHECK(cudaEventCreate(&b));
  fn();
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    TDROP_CUDA_CHECK(cudaEventRecord(a, cuda_stream()));
    fn();
    TDROP_CUDA_CHECK(cudaEventRecord(b, cuda_stream()));
    TDROP_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    TDROP_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Milliseconds per call of `fn` when `calls` of them are queued back to back (the median of
// `reps` such runs): the host submits the next call while the device runs the last, as in a
// training step, so a call short on the device is not charged for its submission, which
// median_ms counts whole (the device idles while the host submits).
template <class Fn>
float queued_ms(Fn fn, int calls = 20, int reps = 7) {
  const float ms = median_ms(
      [&] {
        for (int i = 0; i < calls; ++i) fn();
      },
      reps);
  return ms / static_cast<float>(calls);
}

// The body of a benchmark binary's main: register_all() adds the cases (their names come from
// tables, so they are registered at run time rather than with BENCHMARK macros).
inline int run_benchmarks(int argc, char** argv, void (*register_all)()) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace tdrop
