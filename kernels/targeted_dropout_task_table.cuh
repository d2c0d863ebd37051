// The table of layers (tasks) that one grouped launch of the fused targeted-dropout kernels
// carries as a kernel parameter, shared by the weight-mode kernel
// (targeted_dropout_fused_kernels.cuh), the unit-mode ones (targeted_dropout_unit_kernels.cuh)
// and the host plan that fills it (targeted_dropout_fused_plan.cuh). Internal linkage, as all
// of the fused kernels' code (see targeted_dropout_fused_plan.cuh).
#pragma once
#include <cstdint>

#include "kernels/targeted_dropout_device.cuh"

namespace tdrop {
namespace {

// One table entry per task, passed by value as a kernel parameter (no per-step H2D copy).
struct DevTask {
  const float* w;
  float* w_out;
  uint32_t* mask;
  int64_t rows, n, k;
  uint64_t stream;
  int64_t begin;  // first row of this task in the launch's row numbering
  uint32_t drop_threshold;
  int flag;       // index of this task's non-finite flag
  int per_weight_draws;
  int warp_groups;  // > 0: a warp per row, in this many chunks of 128 entries; < 0: a group
                    // of 4 warps per row, in -warp_groups chunks of 512; 0: a block per row
  int block_tiles;  // block rows: > 0 selects with the row's keys in registers, this many
                    // tiles of 1024 entries (TdBlockSelect::Registers); 0: the shared select
};

// 96 * 88 B: well inside the 32 KB kernel-parameter limit. The whole table is a launch's
// parameter, ResNet-32's 30 tasks or not: -DTDROP_TD_MAX_TASKS=32 (2.8 KB, under the 4 KB that
// parameters had before CUDA 12.1) times what the 8.5 KB cost a short launch.
#ifndef TDROP_TD_MAX_TASKS
#define TDROP_TD_MAX_TASKS 96
#endif
constexpr int kMaxTasks = TDROP_TD_MAX_TASKS;
// Work items: one row of a block-row task, or kWarps rows of a warp-row task.
struct TaskTable {
  DevTask t[kMaxTasks];
  int count;
  int64_t total;  // work items of all tasks
};

// Index of the task owning work item g (largest i with begin <= g; every task has >= 1).
__device__ __forceinline__ int find_task(const TaskTable& table, int64_t g) {
  int lo = 0, hi = table.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (table.t[mid].begin <= g) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

}  // namespace
}  // namespace tdrop
