// What is worked out on the host for a fused targeted-dropout call: which kernel each of its
// launches runs (the weight-mode kernel's instantiation, or the prefetching one; the unit-mode
// kernels), with which table, shared memory and grid. targeted_dropout_fused.cu launches it on
// the device, tests/test_td_fused_emulated.cpp on the host emulation of CUDA
// (tests/cuda_emulator.h), so the plan the tests run is the one the GPU gets. This header and
// the kernels' headers it includes have internal linkage throughout, so that the emulated test
// can compile the same code for the host and run it without a GPU: a kernel compiled twice with
// external linkage would define its host stub twice.
#pragma once
#include <algorithm>
#include <span>

#include "core/error.h"
#include "kernels/targeted_dropout_fused_kernels.cuh"
#include "kernels/targeted_dropout_unit_kernels.cuh"

namespace tdrop {

using namespace td_device;

namespace {

DevTask dev_task(const TdTask& s, int64_t begin, int flag, int warp_groups,
                 int block_tiles = 0) {
  return DevTask{s.w,     s.w_out, s.mask, s.rows, s.n, s.k, s.stream, begin, s.drop_threshold,
                 flag, s.per_weight_draws ? 1 : 0, warp_groups, block_tiles};
}

// Every task is checked before the first launch, so an error leaves every output untouched
// (a model's tasks may span several launches).
void check_fused_tasks(const std::vector<TdTask>& tasks) {
  for (const TdTask& s : tasks) {
    td_check_count(s);
    TDROP_CHECK(s.n <= kTdFusedRowMax && s.rows < (int64_t{1} << 31),
                "targeted dropout: layer '", s.name, "' [", s.rows, ", ", s.n,
                "] is too large for the fused kernel (rows of at most ", kTdFusedRowMax,
                " entries, fewer than 2^31 rows)");
  }
}

// What one fused call launches for a slice of at most kMaxTasks tasks: the weight kernel's
// table and instantiation, and the unit kernels' table (weight tasks and unit tasks go to
// different kernels).
struct FusedLaunch {
  TaskTable weights{}, units{};
  RowPaths paths = kBlockRowsOnly;  // the weight kernel's instantiation, when weights.count > 0
  // Floats of shared memory for a block's row: the longest row staged there, or a longer row's
  // window (kWindowFloats) if that is more.
  int64_t max_staged = 0;
  bool prefetch = false;  // the weights go to td_weight_prefetch_kernel
};

// `first_flag`: the non-finite flag of tasks[0]; `sms`: the device's multiprocessors (for
// TdRows::Auto); `smem_cap`: the longest row, in floats, that shared memory may stage.
FusedLaunch plan_fused_launch(std::span<const TdTask> tasks, int first_flag, TdRows rows,
                              TdBlockSelect select, int sms, int64_t smem_cap) {
  TDROP_CHECK(tasks.size() <= static_cast<size_t>(kMaxTasks), "plan_fused_launch: ",
              tasks.size(), " tasks, at most ", kMaxTasks, " a launch");
  const bool warp_rows = td_short_rows_on_warps(tasks, rows, sms);
  const bool group_rows = rows == TdRows::Group;
  FusedLaunch p;
  TaskTable& weights = p.weights;
  bool has_warp_rows = false, has_group_rows = false, has_block_rows = false;
  bool has_window_rows = false;
  // Prefetched needs every weight row on a block, at most kTdPrefetchRowMax entries, read 16
  // bytes at a time.
  bool prefetchable = select == TdBlockSelect::Prefetched;
  int64_t longest_block_row = 0;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const TdTask& s = tasks[i];
    if (s.rows == 0 || s.n == 0) continue;
    const int flag = first_flag + static_cast<int>(i);
    if (s.unit) {
      p.units.t[p.units.count++] = dev_task(s, p.units.total, flag, 0);
      p.units.total += s.rows;
    } else if (warp_rows && s.n <= kTdWarpRowMax) {
      const int chunks = static_cast<int>((s.n + WarpRow::kSpan - 1) / WarpRow::kSpan);
      weights.t[weights.count++] = dev_task(s, weights.total, flag, chunks);
      weights.total += (s.rows + kWarps - 1) / kWarps;  // a warp per row
      has_warp_rows = true;
    } else if (group_rows && s.n <= kTdWarpRowMax) {
      const int chunks = static_cast<int>((s.n + GroupRow::kSpan - 1) / GroupRow::kSpan);
      weights.t[weights.count++] = dev_task(s, weights.total, flag, -chunks);
      weights.total += (s.rows + kGroupsPerBlock - 1) / kGroupsPerBlock;  // 4 warps per row
      has_group_rows = true;
    } else {
      has_block_rows = true;
      const int tiles = select != TdBlockSelect::Shared && s.n <= kTdRegisterRowMax
                            ? static_cast<int>((s.n + kBlockSpan - 1) / kBlockSpan)
                            : 0;
      weights.t[weights.count++] = dev_task(s, weights.total, flag, 0, tiles);
      weights.total += s.rows;  // a block per row
      const bool selects = s.k > 0 && s.k < s.n;
      if (selects && s.n <= smem_cap) p.max_staged = std::max(p.max_staged, s.n);
      // A row too long to stage gets the room of a window (window_select) where it fits.
      has_window_rows = has_window_rows || (TDROP_TD_WINDOW && selects && s.n > smem_cap &&
                                            smem_cap >= kWindowFloats);
      prefetchable = prefetchable && s.n <= kTdPrefetchRowMax && s.n % 4 == 0 &&
                     reinterpret_cast<uintptr_t>(s.w) % 16 == 0;
      longest_block_row = std::max(longest_block_row, s.n);
    }
  }
  p.paths = has_group_rows ? (has_block_rows ? kGroupAndBlockRows : kGroupRowsOnly)
            : !has_block_rows ? kWarpRowsOnly
            : !has_warp_rows  ? kBlockRowsOnly
                              : kBothRowPaths;
  if (has_window_rows) {
    p.paths = static_cast<RowPaths>(p.paths | kWindowRows);
    p.max_staged = std::max(p.max_staged, kWindowFloats);
  }
  if (prefetchable && p.paths == kBlockRowsOnly && weights.count > 0) {
    p.prefetch = true;
    p.max_staged = longest_block_row;  // every row is staged, k = 0 and n too
  }
  return p;
}

// Rows are read 4 entries at a time, so the staged row is padded to a multiple of 4.
int64_t staged_floats(const FusedLaunch& p) { return (p.max_staged + 3) / 4 * 4; }

// The weight kernel's shared-memory size parameter (the longest row it stages, or the prefetch
// kernel's stride between its two row buffers), dynamic shared memory and grid, where
// `resident_blocks` is how many blocks of the prefetch kernel fit on the device at once.
int64_t weight_smem_param(const FusedLaunch& p) {
  return p.prefetch ? staged_floats(p) : p.max_staged;
}
size_t weight_smem_bytes(const FusedLaunch& p) {
  return static_cast<size_t>(staged_floats(p)) * sizeof(float) * (p.prefetch ? 2 : 1);
}
int64_t weight_grid_blocks(const FusedLaunch& p, int64_t resident_blocks) {
  return p.prefetch ? std::min(p.weights.total, std::max<int64_t>(resident_blocks, 1))
                    : p.weights.total;
}

using WeightKernel = decltype(&td_weight_fused_kernel<kBlockRowsOnly>);
WeightKernel weight_kernel(const FusedLaunch& p) {
  if (p.prefetch) return td_weight_prefetch_kernel;
  switch (static_cast<int>(p.paths)) {  // kWindowRows comes added to a path of block rows
    case kWarpRowsOnly: return td_weight_fused_kernel<kWarpRowsOnly>;
    case kBlockRowsOnly: return td_weight_fused_kernel<kBlockRowsOnly>;
    case kBothRowPaths: return td_weight_fused_kernel<kBothRowPaths>;
    case kGroupRowsOnly: return td_weight_fused_kernel<kGroupRowsOnly>;
    case kGroupAndBlockRows: return td_weight_fused_kernel<kGroupAndBlockRows>;
    case kBlockRowsOnly | kWindowRows:
      return td_weight_fused_kernel<kBlockRowsOnly | kWindowRows>;
    case kBothRowPaths | kWindowRows:
      return td_weight_fused_kernel<kBothRowPaths | kWindowRows>;
    case kGroupAndBlockRows | kWindowRows:
      return td_weight_fused_kernel<kGroupAndBlockRows | kWindowRows>;
  }
  TDROP_CHECK(false, "weight_kernel: no instantiation for row paths ",
              static_cast<int>(p.paths));
  return nullptr;
}

}  // namespace
}  // namespace tdrop
