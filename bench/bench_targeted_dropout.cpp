// Targeted dropout throughput: CPU reference, CPU training path, unfused CUDA pipeline, fused CUDA kernel (one
// grouped launch for all layers of a shape set, and one launch per layer), for the targeted
// layers of each zoo model, three large matrices, and a set of weights full of ties ("ties").
//
// Bytes/s count the fused floor of 8.125 bytes per fp32 weight (read W, write W', one mask
// bit), whatever a path really moves, so paths compare on one scale. Every CUDA case also times
// a device-to-device copy of the same weights (8 bytes per weight) in the same process and
// reports `pct_of_copy`, the share of copy bandwidth reached. CUDA cases skip without a GPU.
//
// Every CUDA path is compared with the CPU reference (W' and mask, bit for bit) before it is
// timed; a mismatch ends that case with an error naming the layer.
//
// Usage: bench_targeted_dropout [--benchmark_filter=REGEX] [--benchmark_format=json] ...
//        (gamma = alpha = 0.5; seed fixed; weights ~ N(0, 1), never all-zero; "ties": the
//        same rounded to multiples of 1/2)
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/tensor.h"
#include "bench/bench_timing.h"
#include "kernels/targeted_dropout.h"

namespace tdrop {
namespace {

using Shapes = std::vector<std::pair<int64_t, int64_t>>;

std::pair<int64_t, int64_t> conv(int64_t out, int64_t in, int64_t k = 3) { return {out, in * k * k}; }

Shapes repeat(Shapes s, int times) {
  Shapes out;
  for (int i = 0; i < times; ++i) out.insert(out.end(), s.begin(), s.end());
  return out;
}

constexpr const char* kTiesSet = "ties";

// The same shape sets as the PyTorch peer (stem and classifier excluded), and kTiesSet.
const std::map<std::string, Shapes>& shape_sets() {
  static const std::map<std::string, Shapes> sets = [] {
    std::map<std::string, Shapes> m;
    m["mlp"] = {{300, 784}, {100, 300}};
    Shapes r = repeat({conv(16, 16)}, 10);
    r.push_back(conv(32, 16));
    for (auto s : repeat({conv(32, 32)}, 9)) r.push_back(s);
    r.push_back(conv(64, 32));
    for (auto s : repeat({conv(64, 64)}, 9)) r.push_back(s);
    m["resnet32"] = r;
    Shapes v = {conv(64, 64), conv(128, 64), conv(128, 128), conv(256, 128)};
    for (auto s : repeat({conv(256, 256)}, 2)) v.push_back(s);
    v.push_back(conv(512, 256));
    for (auto s : repeat({conv(512, 512)}, 5)) v.push_back(s);
    v.push_back({4096, 512});
    v.push_back({4096, 4096});
    m["vgg16"] = v;
    m["transformer"] = repeat({{512, 512}, {512, 512}, {512, 512}, {512, 512}, {2048, 512}, {512, 2048}}, 6);
    m["square"] = {{4096, 4096}};
    m["tall"] = {{1024, 65536}};
    m["wide"] = {{65536, 1024}};
    // Not a model: rows on every path (warps or groups, register and shared selects, the second
    // pass past the on-chip limit) with weights full of ties and signed zeros (kTiesSet), so a
    // build with other kernel flags is checked on the tie ranking too before it is timed.
    m[kTiesSet] = {{160, 144}, {64, 576}, {33, 1000}, {16, 4096}, {5, 4099}, {3, 20000}};
    return m;
  }();
  return sets;
}

constexpr double kGamma = 0.5;
constexpr float kAlpha = 0.5f;
constexpr uint64_t kSeed = 1234;

struct Workload {
  std::vector<Tensor> w, out, mask;
  std::vector<TdTask> tasks;
  int64_t numel = 0;
};

// The weights of shape set `set`, one vector per layer: normal, or (kTiesSet) the same rounded
// to multiples of 1/2, zeros given either sign. Drawn once per process: every case of a set
// times the same weights, and the large sets (tall and wide: 67 M draws) would otherwise spend
// more of a case's time drawing them than timing the kernel.
const std::vector<std::vector<float>>& host_weights(const std::string& set) {
  static std::map<std::string, std::vector<std::vector<float>>> cache;
  if (auto it = cache.find(set); it != cache.end()) return it->second;
  const bool ties = set == kTiesSet;
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto& layers = cache[set];
  for (const auto& [rows, n] : shape_sets().at(set)) {
    std::vector<float>& host = layers.emplace_back(static_cast<size_t>(rows * n));
    for (float& x : host) {
      x = normal(rng);
      if (ties) {
        x = std::round(x * 2) / 2;
        if (x == 0) x = (rng() & 1) ? -0.0f : 0.0f;
      }
    }
  }
  return layers;
}

// The layers of shape set `set` on device d, with their outputs and tasks.
Workload make_workload(const std::string& set, Device d) {
  const Shapes& shapes = shape_sets().at(set);
  const auto& weights = host_weights(set);
  Workload wl;
  for (size_t i = 0; i < shapes.size(); ++i) {
    auto [rows, n] = shapes[i];
    wl.w.push_back(Tensor::from_vector(weights[i], {rows, n}, d));
    wl.out.push_back(Tensor::empty({rows, n}, DType::F32, d));
    wl.mask.push_back(Tensor::empty({rows, mask_words_per_row(n) * 4}, DType::U8, d));
    TdTask t;
    t.w = wl.w.back().data<float>();
    t.w_out = wl.out.back().data<float>();
    t.mask = reinterpret_cast<uint32_t*>(wl.mask.back().raw_data());
    t.rows = rows;
    t.n = n;
    t.k = td_count(kGamma, n);
    t.drop_threshold = bernoulli_threshold(kAlpha);
    t.stream = td_stream(0, i);
    t.name = "layer" + std::to_string(i);
    wl.tasks.push_back(t);
    wl.numel += rows * n;
  }
  return wl;
}

void set_counters(benchmark::State& state, int64_t numel) {
  state.counters["weights"] = static_cast<double>(numel);
  state.counters["bytes_per_second"] = benchmark::Counter(
      8.125 * static_cast<double>(numel) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}

// FusedGrouped: one launch for the set, short rows (<= kTdWarpRowMax entries) placed by
// TdRows::Auto; FusedWarpRows, FusedBlockRows and FusedGroupRows: the same launch with short
// rows forced onto warps, blocks or groups of 4 warps, to check Auto's choice.
// FusedSharedSelect and FusedBlockRowsSharedSelect: FusedGrouped and FusedBlockRows with
// TdBlockSelect::Shared instead of the default register select, for the rows of at most
// kTdRegisterRowMax entries that blocks own. FusedPrefetched: every row on a block, with
// TdBlockSelect::Prefetched (sets whose rows all have at most kTdPrefetchRowMax entries, a
// multiple of 4), against FusedBlockRows or, where every row is long, FusedGrouped.
enum class CudaPath {
  FusedGrouped,
  FusedWarpRows,
  FusedBlockRows,
  FusedGroupRows,
  FusedSharedSelect,
  FusedBlockRowsSharedSelect,
  FusedPrefetched,
  FusedPerLayer,
  Unfused
};

// W' and masks of the CPU reference for a shape set, computed once per process.
const std::vector<std::pair<std::vector<float>, std::vector<uint8_t>>>& reference(
    const std::string& set) {
  static std::map<std::string, std::vector<std::pair<std::vector<float>, std::vector<uint8_t>>>>
      cache;
  auto it = cache.find(set);
  if (it != cache.end()) return it->second;
  Workload wl = make_workload(set, Device::CPU);
  auto& ref = cache[set];
  for (size_t i = 0; i < wl.tasks.size(); ++i) {
    targeted_dropout_reference(wl.tasks[i], kSeed);
    ref.emplace_back(wl.out[i].to_vector<float>(), wl.mask[i].to_vector<uint8_t>());
  }
  return ref;
}

// Empty when every W' and mask of `wl` equals the CPU reference bit for bit; else which layer.
std::string check_against_reference(const Workload& wl, const std::string& set) {
  const auto& ref = reference(set);
  for (size_t i = 0; i < wl.tasks.size(); ++i) {
    const std::vector<float> out = wl.out[i].to_vector<float>();
    if (std::memcmp(out.data(), ref[i].first.data(), out.size() * sizeof(float)) != 0)
      return "W' of " + wl.tasks[i].name + " differs from the CPU reference";
    if (wl.mask[i].to_vector<uint8_t>() != ref[i].second)
      return "mask of " + wl.tasks[i].name + " differs from the CPU reference";
  }
  return {};
}

// The CPU reference, or the CPU training path (checked against the reference first).
void BM_Cpu(benchmark::State& state, const std::string& set, bool use_reference) {
  Workload wl = make_workload(set, Device::CPU);
  if (!use_reference) {
    for (const TdTask& t : wl.tasks) targeted_dropout_cpu(t, kSeed);
    if (const std::string bad = check_against_reference(wl, set); !bad.empty()) {
      state.SkipWithError(bad.c_str());
      return;
    }
  }
  for (auto _ : state)
    for (const TdTask& t : wl.tasks)
      use_reference ? targeted_dropout_reference(t, kSeed) : targeted_dropout_cpu(t, kSeed);
  set_counters(state, wl.numel);
}

void BM_Cuda(benchmark::State& state, const std::string& set, CudaPath path) {
  if (!cuda_available()) {
    state.SkipWithError("no CUDA GPU: CUDA targeted-dropout benchmarks skipped");
    return;
  }
  Workload wl = make_workload(set, Device::CUDA);
  TdCudaWorkspace ws;
  auto run = [&] {
    switch (path) {
      case CudaPath::FusedGrouped: targeted_dropout_fused_cuda(wl.tasks, kSeed, ws); break;
      case CudaPath::FusedWarpRows:
        targeted_dropout_fused_cuda(wl.tasks, kSeed, ws, TdRows::Warp);
        break;
      case CudaPath::FusedBlockRows:
        targeted_dropout_fused_cuda(wl.tasks, kSeed, ws, TdRows::Block);
        break;
      case CudaPath::FusedGroupRows:
        targeted_dropout_fused_cuda(wl.tasks, kSeed, ws, TdRows::Group);
        break;
      case CudaPath::FusedSharedSelect:
        targeted_dropout_fused_cuda(wl.tasks, kSeed, ws, TdRows::Auto, TdBlockSelect::Shared);
        break;
      case CudaPath::FusedBlockRowsSharedSelect:
        targeted_dropout_fused_cuda(wl.tasks, kSeed, ws, TdRows::Block, TdBlockSelect::Shared);
        break;
      case CudaPath::FusedPrefetched:
        targeted_dropout_fused_cuda(wl.tasks, kSeed, ws, TdRows::Block,
                                    TdBlockSelect::Prefetched);
        break;
      case CudaPath::FusedPerLayer:
        for (const TdTask& t : wl.tasks) targeted_dropout_fused_cuda({t}, kSeed, ws);
        break;
      case CudaPath::Unfused: targeted_dropout_unfused_cuda(wl.tasks, kSeed, ws); break;
    }
  };
  // The ceiling: copy the same weights device to device (read 4 B + write 4 B per weight).
  const float copy_ms = median_ms([&] {
    for (size_t i = 0; i < wl.w.size(); ++i)
      TDROP_CUDA_CHECK(cudaMemcpyAsync(wl.out[i].raw_data(), wl.w[i].raw_data(),
                                       wl.w[i].numel() * 4, cudaMemcpyDeviceToDevice,
                                       cuda_stream()));
  });
  // Checked against the reference before it is timed (per layer: each launch has its own flags).
  if (path == CudaPath::FusedPerLayer) {
    for (const TdTask& t : wl.tasks) {
      targeted_dropout_fused_cuda({t}, kSeed, ws);
      td_check_nonfinite({t}, ws);
    }
  } else {
    run();
    td_check_nonfinite(wl.tasks, ws);
  }
  if (const std::string bad = check_against_reference(wl, set); !bad.empty()) {
    state.SkipWithError(bad.c_str());
    return;
  }
  for (auto _ : state) state.SetIterationTime(median_ms(run, 1) * 1e-3);
  const float ms = median_ms(run);
  set_counters(state, wl.numel);
  state.counters["median_us"] = ms * 1e3;
  state.counters["queued_us"] = queued_ms(run) * 1e3;
  state.counters["copy_us"] = copy_ms * 1e3;
  state.counters["copy_GBps"] = 8.0 * static_cast<double>(wl.numel) / (copy_ms * 1e-3) / 1e9;
  state.counters["GBps_8.125"] = 8.125 * static_cast<double>(wl.numel) / (ms * 1e-3) / 1e9;
  state.counters["pct_of_copy"] =
      100.0 * (8.125 * static_cast<double>(wl.numel) / ms) / (8.0 * wl.numel / copy_ms);
}

void register_all() {
  for (const auto& [name, shapes] : shape_sets()) {
    benchmark::RegisterBenchmark(("cpu_reference/" + name).c_str(), BM_Cpu, name, true)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("cpu/" + name).c_str(), BM_Cpu, name, false)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("cuda_fused/" + name).c_str(), BM_Cuda, name,
                                 CudaPath::FusedGrouped)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    bool short_rows = false, register_rows = false, prefetchable = true;
    for (const auto& [rows, n] : shapes) {
      short_rows |= n <= kTdWarpRowMax;
      register_rows |= n <= kTdRegisterRowMax;
      prefetchable &= n <= kTdPrefetchRowMax && n % 4 == 0;
    }
    if (prefetchable)
      benchmark::RegisterBenchmark(("cuda_fused_prefetch/" + name).c_str(), BM_Cuda, name,
                                   CudaPath::FusedPrefetched)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    if (register_rows)
      benchmark::RegisterBenchmark(("cuda_fused_shared/" + name).c_str(), BM_Cuda, name,
                                   CudaPath::FusedSharedSelect)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    if (short_rows)
      benchmark::RegisterBenchmark(("cuda_fused_block_rows_shared/" + name).c_str(), BM_Cuda,
                                   name, CudaPath::FusedBlockRowsSharedSelect)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    if (short_rows) {
      benchmark::RegisterBenchmark(("cuda_fused_warp_rows/" + name).c_str(), BM_Cuda, name,
                                   CudaPath::FusedWarpRows)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("cuda_fused_block_rows/" + name).c_str(), BM_Cuda, name,
                                   CudaPath::FusedBlockRows)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("cuda_fused_group_rows/" + name).c_str(), BM_Cuda, name,
                                   CudaPath::FusedGroupRows)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
    if (shapes.size() > 1)
      benchmark::RegisterBenchmark(("cuda_fused_per_layer/" + name).c_str(), BM_Cuda, name,
                                   CudaPath::FusedPerLayer)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("cuda_unfused/" + name).c_str(), BM_Cuda, name, CudaPath::Unfused)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace
}  // namespace tdrop

int main(int argc, char** argv) { return tdrop::run_benchmarks(argc, argv, tdrop::register_all); }
