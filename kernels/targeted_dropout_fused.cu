// The fused targeted-dropout launches (their plan is targeted_dropout_fused_plan.cuh, the
// kernels are in the headers it includes): the per-device queries and the launches on
// cuda_stream().
#include <algorithm>
#include <map>
#include <mutex>

#include "core/cuda_check.h"
#include "kernels/targeted_dropout_fused_plan.cuh"

namespace tdrop {

using namespace td_device;

namespace {

unsigned grid_for(int64_t items) {
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(items, 1), 1 << 20));
}

// `query(device)`'s answer for the current device, asked once per device: what it reads (or
// sets) does not change while the process runs. Each query (a lambda type) has its own cache.
template <class Query>
int64_t once_per_device(Query query) {
  static std::mutex mu;
  static std::map<int, int64_t> answers;
  int dev = 0;
  TDROP_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = answers.find(dev); it != answers.end()) return it->second;
  return answers[dev] = query(dev);
}

// Largest row (in floats) staged in shared memory: what the device allows beyond the
// static shared state (the select's histogram and candidates), capped so several blocks still
// fit on an SM. The opt-in to that much dynamic shared memory is a per-device attribute of the
// kernel, so it is set (and the answer kept) once for each device launched on.
int64_t smem_capacity_floats() {
  return once_per_device([](int dev) {
    int optin = 0;
    TDROP_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    // The instantiations that stage rows (a warp-rows-only launch asks for no shared memory).
    const void* staging[] = {
        reinterpret_cast<const void*>(td_weight_fused_kernel<kBlockRowsOnly>),
        reinterpret_cast<const void*>(td_weight_fused_kernel<kBothRowPaths>),
        reinterpret_cast<const void*>(td_weight_fused_kernel<kGroupAndBlockRows>),
        reinterpret_cast<const void*>(td_weight_fused_kernel<kBlockRowsOnly | kWindowRows>),
        reinterpret_cast<const void*>(td_weight_fused_kernel<kBothRowPaths | kWindowRows>),
        reinterpret_cast<const void*>(td_weight_fused_kernel<kGroupAndBlockRows | kWindowRows>)};
    int64_t bytes = 64 * 1024;
    for (const void* kernel : staging) {
      cudaFuncAttributes attr{};
      TDROP_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
      bytes = std::min<int64_t>(bytes, optin - static_cast<int64_t>(attr.sharedSizeBytes));
    }
    bytes = bytes / 16 * 16;
    for (const void* kernel : staging)
      TDROP_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(bytes)));
    return bytes / 4;
  });
}

int multiprocessor_count() {
  return static_cast<int>(once_per_device([](int dev) {
    int sms = 0;
    TDROP_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    return int64_t{sms};
  }));
}

// How many blocks of the prefetch kernel fit on the device at once, with its two row buffers
// at their largest (2 x kTdPrefetchRowMax floats), which it is allowed once per device.
int64_t prefetch_resident_blocks() {
  return once_per_device([](int) {
    const void* kernel = reinterpret_cast<const void*>(td_weight_prefetch_kernel);
    const int bytes = static_cast<int>(2 * kTdPrefetchRowMax * sizeof(float));
    TDROP_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    int per_sm = 0;
    TDROP_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, td_weight_prefetch_kernel, kThreads, static_cast<size_t>(bytes)));
    return int64_t{std::max(per_sm, 1)} * multiprocessor_count();
  });
}

}  // namespace

void targeted_dropout_fused_cuda(const std::vector<TdTask>& tasks, uint64_t seed,
                                 TdCudaWorkspace& ws, TdRows rows, TdBlockSelect select) {
  check_fused_tasks(tasks);
  const TdFlags flags = ws.nonfinite_flags(tasks.size());
  const int64_t cap = smem_capacity_floats();
  const int sms = rows == TdRows::Auto ? multiprocessor_count() : 0;
  for (size_t first = 0; first < tasks.size(); first += kMaxTasks) {
    const size_t count = std::min<size_t>(kMaxTasks, tasks.size() - first);
    const FusedLaunch p = plan_fused_launch(std::span<const TdTask>(tasks).subspan(first, count),
                                            static_cast<int>(first), rows, select, sms, cap);
    if (p.weights.count > 0) {
      const WeightKernel kernel = weight_kernel(p);
      const int64_t resident = p.prefetch ? prefetch_resident_blocks() : 0;
      kernel<<<grid_for(weight_grid_blocks(p, resident)), kThreads, weight_smem_bytes(p),
               cuda_stream()>>>(p.weights, philox_keys(seed), weight_smem_param(p), flags);
      TDROP_LAUNCH_CHECK(p.prefetch ? "td_weight_prefetch_kernel" : "td_weight_fused_kernel");
    }
    if (p.units.count > 0) {
      double* norms = static_cast<double*>(ws.buffer(0, p.units.total * sizeof(double)));
      uint8_t* state = static_cast<uint8_t*>(ws.buffer(1, p.units.total));
      const unsigned grid = grid_for(p.units.total);
      td_unit_norms_kernel<<<grid, kThreads, 0, cuda_stream()>>>(p.units, norms, flags);
      TDROP_LAUNCH_CHECK("td_unit_norms_kernel");
      td_unit_select_kernel<<<p.units.count, kThreads, 0, cuda_stream()>>>(p.units, seed, norms,
                                                                          state);
      TDROP_LAUNCH_CHECK("td_unit_select_kernel");
      td_unit_apply_kernel<<<grid, kThreads, 0, cuda_stream()>>>(p.units, seed, state);
      TDROP_LAUNCH_CHECK("td_unit_apply_kernel");
    }
  }
}

}  // namespace tdrop
