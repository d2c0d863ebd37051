// The fused targeted-dropout kernels run without a GPU: the same source (the headers that
// kernels/targeted_dropout_fused_plan.cuh includes), compiled for the host emulation of CUDA
// (tests/cuda_emulator.h), planned by the same host code as the CUDA launch, must give the
// CPU reference's W' and mask bit for bit over the sweep the GPU tests run (tests/td_sweep.h),
// on every placement of rows (warp, group, block) and every block select. What the emulation
// cannot show (speed, races no drawn order exposes, the device compiler's own code) stays with
// the GPU tests.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "tests/cuda_emulator.h"
// The emulator's definitions come first: the kernels' headers are compiled for it (its
// `#pragma unroll`s, the device compiler's, are left alone: tests/CMakeLists.txt).
#include "kernels/targeted_dropout_fused_plan.cuh"
#include "tests/grad_check.h"
#include "tests/td_sweep.h"
#include "tests/td_test_util.h"

namespace tdrop::testing {
namespace {

// What a GPU with 132 multiprocessors and 64 KB of shared memory for a staged row would get.
constexpr int kMultiprocessors = 132;
constexpr int64_t kStagedFloatsMax = 64 * 1024 / 4;
// ... and blocks of the prefetch kernel resident at once, 4 a multiprocessor.
constexpr int64_t kResidentPrefetchBlocks = 4 * kMultiprocessors;

struct EmulatedRun {
  TdRows rows = TdRows::Warp;
  TdBlockSelect select = TdBlockSelect::Shared;
  unsigned max_blocks = 1u << 20;  // grid_for's cap; fewer makes blocks loop over work items
  uint64_t schedule_seed = 1;
  int64_t staged_floats_max = kStagedFloatsMax;  // the longest row shared memory may stage
};

// targeted_dropout_fused_cuda on the emulator: the same checks, plans and kernels, with host
// memory. Returns each task's non-finite flag: 1 where the launch wrote its mark. The flags start
// at an earlier launch's mark, as they do on the device, where nothing clears them per launch.
std::vector<int> fused_emulated(const std::vector<TdTask>& tasks, uint64_t seed,
                                const EmulatedRun& run) {
  check_fused_tasks(tasks);
  constexpr int kEarlierMark = 6, kMark = 7;
  std::vector<int> flags(tasks.size(), kEarlierMark);
  const TdFlags marks{flags.data(), kMark};
  const auto grid = [&](int64_t items) {
    return cuda_emu::dim3{static_cast<unsigned>(
        std::min<int64_t>(std::max<int64_t>(items, 1), run.max_blocks))};
  };
  const cuda_emu::dim3 block{static_cast<unsigned>(kThreads)};
  for (size_t first = 0; first < tasks.size(); first += kMaxTasks) {
    const size_t count = std::min<size_t>(kMaxTasks, tasks.size() - first);
    const FusedLaunch p =
        plan_fused_launch(std::span<const TdTask>(tasks).subspan(first, count),
                          static_cast<int>(first), run.rows, run.select, kMultiprocessors,
                          run.staged_floats_max);
    if (p.weights.count > 0) {
      const WeightKernel kernel = weight_kernel(p);
      const PhiloxKeys keys = philox_keys(seed);
      const int64_t smem = weight_smem_param(p);
      cuda_emu::launch(grid(weight_grid_blocks(p, kResidentPrefetchBlocks)), block,
                       weight_smem_bytes(p), [&] { kernel(p.weights, keys, smem, marks); },
                       run.schedule_seed);
    }
    if (p.units.count > 0) {
      std::vector<double> norms(static_cast<size_t>(p.units.total));
      std::vector<uint8_t> state(static_cast<size_t>(p.units.total));
      cuda_emu::launch(grid(p.units.total), block, 0,
                       [&] { td_unit_norms_kernel(p.units, norms.data(), marks); },
                       run.schedule_seed);
      cuda_emu::launch(cuda_emu::dim3{static_cast<unsigned>(p.units.count)}, block, 0,
                       [&] { td_unit_select_kernel(p.units, seed, norms.data(), state.data()); },
                       run.schedule_seed);
      cuda_emu::launch(grid(p.units.total), block, 0,
                       [&] { td_unit_apply_kernel(p.units, seed, state.data()); },
                       run.schedule_seed);
    }
  }
  for (int& f : flags) f = f == kMark ? 1 : 0;
  return flags;
}

std::string run_name(const EmulatedRun& run) {
  return std::string(run.rows == TdRows::Warp    ? "warp rows"
                     : run.rows == TdRows::Block ? "block rows"
                     : run.rows == TdRows::Group ? "group rows"
                                                 : "auto placement") +
         (run.select == TdBlockSelect::Registers    ? ", register select"
          : run.select == TdBlockSelect::Prefetched ? ", prefetched"
                                                    : "") +
         (run.max_blocks < (1u << 20) ? ", " + std::to_string(run.max_blocks) + " blocks" : "");
}

// Edits case i's weights (rows * n of them) after they are drawn.
using WeightEdit = std::function<void(size_t i, const Case& c, std::vector<float>& w)>;

// Runs `cases` as one group on the emulator and compares every task with the CPU reference.
// `shift` moves W and W' one float past 16-byte alignment, so no row takes the 16-byte paths.
// W' and the mask are fenced by sentinels after their ends, which must survive.
void emulate_and_compare(const std::vector<Case>& cases, uint64_t seed, const EmulatedRun& run,
                         int64_t shift = 0, const WeightEdit& edit = nullptr) {
  constexpr int64_t kTail = 8;
  constexpr float kSentinel = -1.0f;
  constexpr uint32_t kMaskSentinel = 0xabababab;
  std::mt19937_64 rng(seed);
  std::vector<std::vector<float>> weights(cases.size()), outs(cases.size());
  std::vector<std::vector<uint32_t>> masks(cases.size());
  std::vector<TdOutput> ref(cases.size());
  std::vector<TdTask> tasks;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    std::vector<float> w = make_weights(c.rows * c.n, c.kind, rng);
    if (edit) edit(i, c, w);
    // 16-byte aligned storage (vector<float> guarantees only 4); `shift` floats in.
    weights[i].assign(static_cast<size_t>(shift + c.rows * c.n + 4), 3.0f);
    float* w_at = weights[i].data();
    while (reinterpret_cast<uintptr_t>(w_at) % 16 != 0) ++w_at;
    std::copy(w.begin(), w.end(), w_at + shift);
    TdTask t = make_task(w, c.rows, c.n, c.gamma, c.alpha, c.unit, td_stream(1000 + i, i), ref[i],
                         c.per_weight);
    targeted_dropout_reference(t, seed);
    outs[i].assign(static_cast<size_t>(shift + c.rows * c.n + kTail + 4), kSentinel);
    float* out_at = outs[i].data();
    while (reinterpret_cast<uintptr_t>(out_at) % 16 != 0) ++out_at;
    masks[i].assign(ref[i].mask.size() + kTail, kMaskSentinel);
    t.w = w_at + shift;
    t.w_out = out_at + shift;
    t.mask = masks[i].data();
    tasks.push_back(t);
  }
  const std::vector<int> flags = fused_emulated(tasks, seed, run);
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    SCOPED_TRACE(run_name(run) + (shift ? ", W and W' unaligned" : "") + " case " +
                 std::to_string(i) + ": [" + std::to_string(c.rows) + ", " +
                 std::to_string(c.n) + "] " + kind_name(c.kind) + " gamma " +
                 std::to_string(c.gamma) + " alpha " + std::to_string(c.alpha) +
                 (c.unit ? " unit" : " weight") + (c.per_weight ? " per-weight" : ""));
    EXPECT_EQ(flags[i], 0) << "a finite task was flagged non-finite";
    const float* out = tasks[i].w_out;
    const float* alloc = outs[i].data();
    for (const float* p = alloc; p < out; ++p)
      EXPECT_EQ(to_bits(*p), to_bits(kSentinel)) << "written before W' at " << p - out;
    for (int64_t j = 0; j < kTail; ++j)
      EXPECT_EQ(to_bits(out[c.rows * c.n + j]), to_bits(kSentinel))
          << "written past the end of W' at " << j;
    int bad = 0;
    for (int64_t j = 0; j < c.rows * c.n && bad < 5; ++j)
      if (to_bits(out[j]) != to_bits(ref[i].w_out[static_cast<size_t>(j)])) {
        ADD_FAILURE() << "W' differs at " << j << ": " << out[j] << " vs "
                      << ref[i].w_out[static_cast<size_t>(j)];
        ++bad;
      }
    for (size_t j = ref[i].mask.size(); j < masks[i].size(); ++j)
      EXPECT_EQ(masks[i][j], kMaskSentinel) << "written past the end of the mask at word " << j;
    for (size_t j = 0; j < ref[i].mask.size() && bad < 10; ++j)
      if (masks[i][j] != ref[i].mask[j]) {
        ADD_FAILURE() << "mask word " << j << " differs: " << std::hex << masks[i][j] << " vs "
                      << ref[i].mask[j];
        ++bad;
      }
  }
}

std::vector<Case> short_rows_of(const std::vector<Case>& cases) {
  std::vector<Case> out;
  for (const Case& c : cases)
    if (c.n <= kTdWarpRowMax) out.push_back(c);
  return out;
}

TEST(TdFusedEmulated, WarpRowsMatchReferenceBitForBit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  emulate_and_compare(sweep(false), seed, {TdRows::Warp});
  // Only short rows: the warp-only instantiation, whose rows are inlined.
  emulate_and_compare(short_rows_of(sweep(false)), seed, {TdRows::Warp});
}

TEST(TdFusedEmulated, BlockRowsMatchReferenceBitForBit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  emulate_and_compare(sweep(false), seed, {TdRows::Block});
}

TEST(TdFusedEmulated, GroupRowsMatchReferenceBitForBit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  emulate_and_compare(sweep(false), seed, {TdRows::Group});
  emulate_and_compare(short_rows_of(sweep(false)), seed, {TdRows::Group});
}

// Auto with each select: the register select is the default, what the layers run.
TEST(TdFusedEmulated, AutoPlacementMatchesReferenceBitForBit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (TdBlockSelect select : {TdBlockSelect::Registers, TdBlockSelect::Shared})
    emulate_and_compare(sweep(false), seed, {TdRows::Auto, select});
}

TEST(TdFusedEmulated, RegisterSelectMatchesReferenceBitForBit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (TdRows rows : {TdRows::Block, TdRows::Group})
    emulate_and_compare(sweep(false), seed, {rows, TdBlockSelect::Registers});
}

// The sweep's rows that the prefetch kernel takes: at most kTdPrefetchRowMax entries, a
// multiple of 4 (the weights are 16-byte aligned here), and rows of kTdPrefetchRowMax, which
// take the shared select, from the copy.
std::vector<Case> prefetchable_rows_of(const std::vector<Case>& cases) {
  std::vector<Case> out;
  for (const Case& c : cases)
    if (c.n <= kTdPrefetchRowMax && c.n % 4 == 0) out.push_back(c);
  for (double gamma : {0.01, 0.5, 0.99})
    out.push_back({3, kTdPrefetchRowMax, WeightKind::Normal, gamma, 0.5f, false, false});
  out.push_back({3, kTdPrefetchRowMax, WeightKind::FewValues, 0.5, 1.0f, false, false});
  return out;
}

// What plan_fused_launch makes of `cases` (16-byte aligned W, gamma 1/2): the plan of each launch.
std::vector<FusedLaunch> plans_of(const std::vector<Case>& cases, TdRows rows,
                                  TdBlockSelect select,
                                  int64_t staged_floats_max = kStagedFloatsMax) {
  std::vector<std::vector<float>> w(cases.size());
  std::vector<TdTask> tasks;
  for (size_t i = 0; i < cases.size(); ++i) {
    w[i].resize(static_cast<size_t>(cases[i].rows * cases[i].n) + 4);
    float* at = w[i].data();
    while (reinterpret_cast<uintptr_t>(at) % 16 != 0) ++at;
    TdTask t;
    t.w = at;
    t.rows = cases[i].rows;
    t.n = cases[i].n;
    t.k = cases[i].n / 2;
    t.unit = cases[i].unit;
    tasks.push_back(t);
  }
  std::vector<FusedLaunch> plans;
  for (size_t first = 0; first < tasks.size(); first += kMaxTasks) {
    const size_t count = std::min<size_t>(kMaxTasks, tasks.size() - first);
    plans.push_back(plan_fused_launch(std::span<const TdTask>(tasks).subspan(first, count),
                                      static_cast<int>(first), rows, select, kMultiprocessors,
                                      staged_floats_max));
  }
  return plans;
}

// Whether plan_fused_launch gives every launch of `cases` to the prefetch kernel.
bool planned_prefetch(const std::vector<Case>& cases, TdRows rows) {
  bool all = true;
  for (const FusedLaunch& p : plans_of(cases, rows, TdBlockSelect::Prefetched))
    all = all && p.prefetch;
  return all;
}

// The prefetch kernel on the sweep's rows that it takes, with a block for each row and with 3
// blocks and 1 block walking them all (each row's copy lands while the row before is worked
// on, and a block's two buffers alternate).
TEST(TdFusedEmulated, PrefetchedRowsMatchReferenceBitForBit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::vector<Case> cases = prefetchable_rows_of(sweep(false));
  ASSERT_TRUE(planned_prefetch(cases, TdRows::Block));
  for (unsigned blocks : {1u << 20, 1u})
    emulate_and_compare(cases, seed, {TdRows::Block, TdBlockSelect::Prefetched, blocks});
  emulate_and_compare(cases, seed, {TdRows::Block, TdBlockSelect::Prefetched, 3, 2});
}

// Launches the prefetch kernel does not take run as with the register select: a row longer
// than kTdPrefetchRowMax, one not a multiple of 4, W off 16-byte alignment, short rows on
// warps, unit rows beside weight rows.
TEST(TdFusedEmulated, PrefetchedFallsBackWhereItCannotPrefetch) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Case base{5, 1024, WeightKind::Normal, 0.5, 0.5f, false, false};
  const auto with = [&](int64_t n, bool unit) {
    Case c = base;
    c.n = n;
    c.unit = unit;
    return std::vector<Case>{base, c};
  };
  EXPECT_TRUE(planned_prefetch(with(kTdPrefetchRowMax, false), TdRows::Block));
  EXPECT_TRUE(planned_prefetch(with(4096, true), TdRows::Block)) << "unit rows go elsewhere";
  EXPECT_FALSE(planned_prefetch(with(kTdPrefetchRowMax + 4, false), TdRows::Block));
  EXPECT_FALSE(planned_prefetch(with(1001, false), TdRows::Block));
  EXPECT_FALSE(planned_prefetch(with(1024, false), TdRows::Warp));
  for (int64_t n : {kTdPrefetchRowMax + 4, int64_t{1001}})
    emulate_and_compare(with(n, false), seed, {TdRows::Block, TdBlockSelect::Prefetched, 3});
  emulate_and_compare(with(4096, true), seed, {TdRows::Block, TdBlockSelect::Prefetched, 3});
  emulate_and_compare(with(1024, false), seed, {TdRows::Block, TdBlockSelect::Prefetched, 3},
                      /*shift=*/1);
  emulate_and_compare(sweep(false), seed, {TdRows::Auto, TdBlockSelect::Prefetched});
}

// Rows too long to stage, in a launch that may stage kWindowFloats floats (the room of a window):
// their first pass sets aside the keys near the k-th key's first digit (window_pass). Rows of
// real weights find that digit in the window, whose keys the later passes read; rows of every
// kind of weights (ties, one binade, denormals, ...) give the reference's bits whether the
// window holds it or not. Two edits make the row be read again: rows whose first kWindowSample
// entries, the window's sample, are 64x the rest (the k-th key's digit lies outside the
// window), and rows with every third entry past the sample set to their k-th magnitude (more
// keys fall in the window than it has room for; the shortest rows fit, tied at the threshold).
TEST(TdFusedEmulated, LongRowsSetAsideTheKeysNearTheirThreshold) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<Case> cases;
  for (int64_t n : {10001, 16387, 65536})
    for (double gamma : {0.01, 0.3, 0.5, 0.99})
      cases.push_back({2, n, WeightKind::Normal, gamma, 0.5f, false, false});
  for (WeightKind kind : kEveryWeightKind)
    cases.push_back({2, 12000, kind, 0.5, 0.5f, false, false});
  // The kernel with windows, and room for one, for long rows alone and beside short rows on
  // warps and on groups of warps.
  const std::vector<Case> mixed = {cases[1], cases[6],
                                   {40, 576, WeightKind::Normal, 0.5, 0.5f, false, false}};
  const int window = TDROP_TD_WINDOW ? kWindowRows : 0;
  using Expected = std::tuple<std::vector<Case>, TdRows, int>;
  for (const auto& [launch, rows, paths] :
       {Expected{cases, TdRows::Auto, kBlockRowsOnly | window},
        Expected{mixed, TdRows::Warp, kBothRowPaths | window},
        Expected{mixed, TdRows::Group, kGroupAndBlockRows | window}}) {
    const FusedLaunch plan =
        plans_of(launch, rows, TdBlockSelect::Registers, kWindowFloats).at(0);
    EXPECT_EQ(plan.paths, paths);
    EXPECT_EQ(plan.max_staged, window ? kWindowFloats : 0) << "room for a window";
  }
  EmulatedRun run{TdRows::Auto, TdBlockSelect::Registers};
  run.staged_floats_max = kWindowFloats;
  emulate_and_compare(cases, seed, run);
  emulate_and_compare(cases, seed, run, /*shift=*/1);
  for (TdRows rows : {TdRows::Warp, TdRows::Group}) {
    EmulatedRun with_short_rows = run;
    with_short_rows.rows = rows;
    emulate_and_compare(mixed, seed, with_short_rows);
  }
  const WeightEdit misleading_sample = [](size_t, const Case& c, std::vector<float>& w) {
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t col = 0; col < kWindowSample; ++col) w[static_cast<size_t>(r * c.n + col)] *= 64;
  };
  emulate_and_compare(cases, seed, run, 0, misleading_sample);
  const WeightEdit crowded_window = [](size_t, const Case& c, std::vector<float>& w) {
    const int64_t k = static_cast<int64_t>(c.gamma * static_cast<double>(c.n));
    for (int64_t r = 0; r < c.rows && k > 0; ++r) {
      float* row = w.data() + r * c.n;
      std::vector<float> mag(row, row + c.n);
      for (float& x : mag) x = std::fabs(x);
      std::nth_element(mag.begin(), mag.begin() + (k - 1), mag.end());
      for (int64_t col = kWindowSample; col < c.n; col += 3) row[col] = mag[k - 1];
    }
  };
  emulate_and_compare(cases, seed, run, 0, crowded_window);
}

TEST(TdFusedEmulated, UnitModeMatchesReferenceBitForBit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  emulate_and_compare(sweep(true), seed, {});
}

// W and W' off 16-byte alignment: every row takes the general loads and stores.
TEST(TdFusedEmulated, UnalignedWeightsAndOutputMatchReferenceBitForBit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<Case> cases;
  for (int64_t n : {128, 576, 1024, 1500, 4096})
    for (double gamma : {0.5, 0.99})
      cases.push_back({5, n, WeightKind::Normal, gamma, 0.5f, false, false});
  for (TdRows rows : {TdRows::Warp, TdRows::Group, TdRows::Block})
    emulate_and_compare(cases, seed, {rows}, /*shift=*/1);
  emulate_and_compare(cases, seed, {TdRows::Block, TdBlockSelect::Registers}, 1);
}

// Rows whose keys share their top bits but for one entry, a different one in each row: the
// AND and OR of a short row's keys, its select's first step, must take in every warp's entries.
TEST(TdFusedEmulated, OneEntryOutsideTheRowsCommonBits) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<Case> cases;
  for (int64_t n : {200, 576, 1000, 1024, 1500})
    for (double gamma : {0.01, 0.5})
      cases.push_back({16, n, WeightKind::OneBinade, gamma, 0.5f, false, false});
  const WeightEdit one_outlier = [](size_t i, const Case& c, std::vector<float>& w) {
    for (int64_t r = 0; r < c.rows; ++r) {
      const int64_t at = (r * 67 + static_cast<int64_t>(i) * 13) % c.n;
      w[static_cast<size_t>(r * c.n + at)] = r % 2 ? 0.001f : -2.5f;  // below or above the rest
    }
  };
  // And rows whose largest keys, the k-th among them, are all held by one warp of a group row
  // (entries 128 j to 128 j + 127 of every 512, j drawn per row).
  std::vector<Case> high_cases;
  for (int64_t n : {576, 1000, 1024})
    high_cases.push_back({16, n, WeightKind::OneBinade, 0.9, 0.5f, false, false});
  const WeightEdit one_warp_high = [](size_t, const Case& c, std::vector<float>& w) {
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t col = 0; col < c.n; ++col)
        if ((col % 512) / 128 == r % 4) w[static_cast<size_t>(r * c.n + col)] *= 2.5f;
  };
  for (TdRows rows : {TdRows::Warp, TdRows::Group, TdRows::Block}) {
    emulate_and_compare(cases, seed, {rows}, 0, one_outlier);
    emulate_and_compare(high_cases, seed, {rows}, 0, one_warp_high);
  }
}

// Draws at the edge of alpha's threshold, where the aligned steps' one compare per entry
// (u <= td_draw_bound) must agree with the reference's (u >> 8) < threshold: for a warp row of
// 576 entries and a block row of 4096, a stream is searched whose row holds a draw one step
// below the threshold (dropped) or at it (kept). Every entry is targeted (gamma 1).
TEST(TdFusedEmulated, DrawsAtTheThresholdsEdge) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const uint32_t threshold = bernoulli_threshold(0.5f);
  for (int64_t n : {576, 4096})
    for (uint32_t top : {threshold - 1, threshold}) {  // the draw's top 24 bits
      uint64_t stream = 0;
      int64_t at = -1;
      for (uint64_t step = 0; at < 0; ++step) {
        stream = td_stream(step, 0);
        for (int64_t c = 0; c < n && at < 0; ++c)
          if ((philox_u32(seed, stream, static_cast<uint64_t>(c)) >> 8) == top) at = c;
      }
      std::mt19937_64 rng(seed);
      const std::vector<float> w = make_weights(n, WeightKind::Normal, rng);
      TdOutput ref, out;
      const TdTask ref_task = make_task(w, 1, n, 1.0, 0.5f, false, stream, ref);
      targeted_dropout_reference(ref_task, seed);
      ASSERT_EQ(mask_bit(ref.mask, n, 0, at), top == threshold) << "the edge is not where it is";
      ASSERT_EQ(reinterpret_cast<uintptr_t>(w.data()) % 16, 0u) << "the aligned steps need it";
      for (TdRows rows : {TdRows::Warp, TdRows::Group, TdRows::Block}) {
        SCOPED_TRACE("n " + std::to_string(n) + ", entry " + std::to_string(at) + ", " +
                     run_name({rows}) + (top == threshold ? ", kept side" : ", dropped side"));
        const std::vector<TdTask> tasks = {make_task(w, 1, n, 1.0, 0.5f, false, stream, out)};
        ASSERT_EQ(reinterpret_cast<uintptr_t>(out.w_out.data()) % 16, 0u);
        fused_emulated(tasks, seed, {rows});
        EXPECT_EQ(out.mask, ref.mask);
        for (int64_t c = 0; c < n; ++c)
          ASSERT_EQ(to_bits(out.w_out[static_cast<size_t>(c)]),
                    to_bits(ref.w_out[static_cast<size_t>(c)])) << "W' at " << c;
      }
    }
}

// Three blocks for hundreds of work items: each block takes row after row, so whatever a row
// leaves in shared memory (the histogram must be zero again) meets the next one, of another
// task and path. Unit tasks ride along: their norm and apply launches loop the same way.
TEST(TdFusedEmulated, FewBlocksLoopOverEveryRow) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<Case> cases;
  for (int64_t n : {100, 576, 1024, 2049, 4096})
    for (WeightKind kind : {WeightKind::Normal, WeightKind::FewValues, WeightKind::Ladder})
      cases.push_back({9, n, kind, 0.5, 0.5f, false, false});
  for (int64_t n : {100, 1024})
    cases.push_back({20, n, WeightKind::FewValues, 0.5, 0.5f, true, n == 100});
  for (TdRows rows : {TdRows::Warp, TdRows::Group, TdRows::Block})
    for (TdBlockSelect select : {TdBlockSelect::Shared, TdBlockSelect::Registers}) {
      EmulatedRun run{rows, select, 3};
      emulate_and_compare(cases, seed, run);
    }
  // The prefetch kernel's rows, of three tasks.
  std::vector<Case> prefetched;
  for (int64_t n : {1024, 4096, 2000})
    prefetched.push_back({9, n, WeightKind::FewValues, 0.5, 0.5f, false, false});
  emulate_and_compare(prefetched, seed, {TdRows::Block, TdBlockSelect::Prefetched, 3});
}

// Other orders of the threads between barriers give the same bits (a kernel that read shared
// memory another thread writes in the same interval would not).
TEST(TdFusedEmulated, ScheduleOrderDoesNotChangeTheBits) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<Case> cases;
  for (int64_t n : {129, 576, 1024, 4099})
    cases.push_back({4, n, WeightKind::FewValues, 0.5, 0.5f, false, false});
  for (uint64_t order = 2; order < 5; ++order) {
    for (TdRows rows : {TdRows::Warp, TdRows::Group, TdRows::Block})
      emulate_and_compare(cases, seed, {rows, TdBlockSelect::Shared, 1u << 20, order});
    emulate_and_compare(cases, seed, {TdRows::Block, TdBlockSelect::Registers, 1u << 20, order});
  }
}

// More tasks than one launch's table holds (kMaxTasks), weight and unit ones alternating: the
// launches split them, and a NaN in a task of the second launch flags that task alone.
TEST(TdFusedEmulated, MoreTasksThanOneLaunchHolds) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<Case> cases;
  for (int i = 0; i < 130; ++i)
    cases.push_back({5 + i % 7, 100 + 9 * (i % 5), WeightKind::Normal, 0.5, 0.5f, i % 3 == 0,
                     false});
  emulate_and_compare(cases, seed, {TdRows::Auto});
  std::mt19937_64 rng(seed);
  std::vector<std::vector<float>> weights;
  std::vector<TdOutput> outs(cases.size());
  std::vector<TdTask> tasks;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    weights.push_back(make_weights(c.rows * c.n, c.kind, rng));
    if (i == 100 || i == 102) weights.back()[7] = std::numeric_limits<float>::quiet_NaN();
    tasks.push_back(make_task(weights.back(), c.rows, c.n, c.gamma, c.alpha, c.unit,
                              td_stream(1, i), outs[i]));
  }
  const std::vector<int> flags = fused_emulated(tasks, seed, {TdRows::Auto});
  for (size_t i = 0; i < tasks.size(); ++i)
    EXPECT_EQ(flags[i], i == 100 || i == 102 ? 1 : 0) << "task " << i;
}

// A NaN or Inf sets its own task's flag on every path, and no other task's.
TEST(TdFusedEmulated, NonFiniteWeightFlagsItsTask) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const float bad_values[] = {std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity(),
                              std::numeric_limits<float>::quiet_NaN()};
  for (int64_t n : {100, 576, 1500, 4096})
    for (TdRows rows : {TdRows::Warp, TdRows::Group, TdRows::Block})
      for (bool unit : {false, true}) {
        std::vector<float> clean = make_weights(4 * n, WeightKind::Normal, rng);
        std::vector<float> dirty = make_weights(4 * n, WeightKind::Normal, rng);
        dirty[static_cast<size_t>(rng() % dirty.size())] = bad_values[rng() % 3];
        TdOutput o1, o2;
        std::vector<TdTask> tasks = {
            make_task(clean, 4, n, 0.5, 0.5f, unit, td_stream(1, 0), o1),
            make_task(dirty, 4, n, 0.5, 0.5f, unit, td_stream(1, 1), o2)};
        const std::vector<int> flags = fused_emulated(tasks, seed, {rows});
        EXPECT_EQ(flags[0], 0) << "n " << n << ", " << run_name({rows}) << (unit ? ", unit" : "");
        EXPECT_EQ(flags[1], 1) << "n " << n << ", " << run_name({rows}) << (unit ? ", unit" : "");
      }
}

}  // namespace
}  // namespace tdrop::testing
