// Targeted dropout on CUDA against the CPU reference, bit for bit: W' and the mask of the fused
// grouped kernel and of the unfused pipeline must equal the reference's exactly, over shapes
// (rows of 1 to 10^6 entries, odd counts, rows longer than shared memory), gamma, alpha, weight
// kinds (ties, zeros, -0.0, denormals) and modes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/error.h"
#include "core/tensor.h"
#include "layers/activation.h"
#include "layers/linear.h"
#include "layers/sequential.h"
#include "layers/targeted.h"
#include "tests/expect_error.h"
#include "tests/grad_check.h"
#include "tests/td_sweep.h"
#include "tests/td_test_util.h"

namespace tdrop::testing {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU: targeted-dropout CPU<->CUDA test skipped"

// Runs `cases` as one group on the device (fused: one launch; unfused: a pipeline per task)
// and compares every task with the CPU reference. `rows` places the fused kernel's short rows
// (Warp by default: a sweep's few rows would get blocks under Auto, leaving the warp path
// untested); `select` is how its block rows find their threshold. `w_shift` and `out_shift`
// move W and W' that many floats past the start of their allocations (which are 16-byte
// aligned): 1 makes every row of 4k entries miss the 16-byte loads and stores. W' is fenced by
// sentinels before and after it, which must survive.
void run_and_compare(const std::vector<Case>& cases, bool fused, uint64_t seed,
                     TdRows rows = TdRows::Warp,
                     TdBlockSelect select = TdBlockSelect::Shared, int64_t w_shift = 0,
                     int64_t out_shift = 0) {
  constexpr int64_t kTail = 8;  // sentinels after W'
  constexpr float kSentinel = -1.0f;
  std::mt19937_64 rng(seed);
  std::vector<std::vector<float>> weights;
  std::vector<TdOutput> ref(cases.size());
  std::vector<Tensor> dw, dout, dmask;
  std::vector<TdTask> tasks;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    weights.push_back(make_weights(c.rows * c.n, c.kind, rng));
    TdTask t = make_task(weights[i], c.rows, c.n, c.gamma, c.alpha, c.unit,
                         td_stream(1000 + i, i), ref[i], c.per_weight);
    targeted_dropout_reference(t, seed);
    std::vector<float> shifted(static_cast<size_t>(w_shift), 3.0f);
    shifted.insert(shifted.end(), weights[i].begin(), weights[i].end());
    dw.push_back(Tensor::from_vector(shifted, {w_shift + c.rows * c.n}, Device::CUDA));
    dout.push_back(Tensor::full({out_shift + c.rows * c.n + kTail}, kSentinel, DType::F32,
                                Device::CUDA));
    dmask.push_back(Tensor::full({c.rows, mask_words_per_row(c.n) * 4}, 0xAB, DType::U8,
                                 Device::CUDA));
    t.w = dw.back().data<float>() + w_shift;
    t.w_out = dout.back().data<float>() + out_shift;
    t.mask = reinterpret_cast<uint32_t*>(dmask.back().raw_data());
    tasks.push_back(t);
  }
  TdCudaWorkspace ws;
  if (fused) targeted_dropout_fused_cuda(tasks, seed, ws, rows, select);
  else targeted_dropout_unfused_cuda(tasks, seed, ws);
  td_check_nonfinite(tasks, ws);
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    SCOPED_TRACE(std::string(!fused                    ? "unfused"
                             : rows == TdRows::Warp  ? "fused, warp rows"
                             : rows == TdRows::Block ? "fused, block rows"
                             : rows == TdRows::Group ? "fused, group rows"
                                                     : "fused, auto") +
                 (fused && select == TdBlockSelect::Registers    ? ", register select"
                  : fused && select == TdBlockSelect::Prefetched ? ", prefetched"
                                                                 : "") +
                 (w_shift || out_shift ? ", W shifted by " + std::to_string(w_shift) +
                                             ", W' by " + std::to_string(out_shift)
                                       : std::string()) +
                 " case " + std::to_string(i) + ": [" +
                 std::to_string(c.rows) + ", " + std::to_string(c.n) + "] " + kind_name(c.kind) +
                 " gamma " + std::to_string(c.gamma) + " alpha " + std::to_string(c.alpha) +
                 (c.unit ? " unit" : " weight") + (c.per_weight ? " per-weight" : ""));
    std::vector<float> out = dout[i].to_vector<float>();
    for (int64_t j = 0; j < out_shift; ++j)
      EXPECT_EQ(to_bits(out[j]), to_bits(kSentinel)) << "written before W' at " << j - out_shift;
    for (int64_t j = 0; j < kTail; ++j)
      EXPECT_EQ(to_bits(out[out.size() - kTail + j]), to_bits(kSentinel))
          << "written past the end of W' at " << j;
    out = std::vector<float>(out.begin() + out_shift, out.end() - kTail);
    const std::vector<uint8_t> mask_bytes = dmask[i].to_vector<uint8_t>();
    std::vector<uint32_t> mask(ref[i].mask.size());
    std::memcpy(mask.data(), mask_bytes.data(), mask.size() * 4);
    int64_t bad = 0;
    for (size_t j = 0; j < out.size() && bad < 5; ++j)
      if (to_bits(out[j]) != to_bits(ref[i].w_out[j])) {
        ADD_FAILURE() << "W' differs at " << j << ": " << out[j] << " vs " << ref[i].w_out[j];
        ++bad;
      }
    for (size_t j = 0; j < mask.size() && bad < 10; ++j)
      if (mask[j] != ref[i].mask[j]) {
        ADD_FAILURE() << "mask word " << j << " differs: " << std::hex << mask[j] << " vs "
                      << ref[i].mask[j];
        ++bad;
      }
  }
}

TEST(CudaTargetedDropout, FusedWeightModeMatchesReferenceBitForBit) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_and_compare(sweep(false), true, seed);
}

// A launch of only short rows on warps (ResNet-32's) runs its own instantiation of the kernel,
// where whole steps of the final pass skip the tests per entry: the sweep's short rows alone.
TEST(CudaTargetedDropout, FusedWarpOnlyLaunchMatchesReferenceBitForBit) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<Case> cases;
  for (const Case& c : sweep(false))
    if (c.n <= kTdWarpRowMax) cases.push_back(c);
  ASSERT_GT(cases.size(), 100u);
  run_and_compare(cases, true, seed, TdRows::Warp);
}

// Rows of at most 1024 entries go to one warp each in the sweep above; the block-per-row and
// group-per-row paths must give the same bits for them.
TEST(CudaTargetedDropout, FusedWeightModeBlockRowsMatchReferenceBitForBit) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_and_compare(sweep(false), true, seed, TdRows::Block);
}

// Group rows: 2 rows of 1..1024 entries per block, each on 4 warps with their own barrier, so a
// block's two groups run different rows, tasks and tie scans apart. The sweep puts long rows
// (block rows) in the same launch; the small launch (short rows only, ties, one and two chunks
// of 512, an odd row count) is racecheck's.
TEST(CudaTargetedDropout, FusedWeightModeGroupRowsMatchReferenceBitForBit) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_and_compare(sweep(false), true, seed, TdRows::Group);
}

TEST(CudaTargetedDropout, FusedGroupRowsSmallLaunch) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_and_compare({{1, 1024, WeightKind::FewValues, 0.5, 0.5f, false, false},
                   {3, 513, WeightKind::Normal, 0.5, 1.0f, false, false},
                   {5, 512, WeightKind::AllZero, 0.3, 0.5f, false, false},
                   {4, 300, WeightKind::FewValues, 0.99, 0.5f, false, false},
                   {33, 576, WeightKind::Normal, 0.5, 0.5f, false, false}},
                  true, seed, TdRows::Group);
}

// The default placement. The whole sweep's short rows fill more blocks of warps than a GPU has
// SMs, so they go to warps, as do 4096 rows of 300 (512 blocks of warps); a launch of a few
// short rows (8 blocks' worth of warps, fewer than any GPU has SMs) puts them on blocks instead.
// The same bits every way.
TEST(CudaTargetedDropout, FusedWeightModeAutoPlacementMatchesReferenceBitForBit) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_and_compare(sweep(false), true, seed, TdRows::Auto);
  run_and_compare({{4096, 300, WeightKind::Normal, 0.5, 0.5f, false, false},
                   {64, 1000, WeightKind::FewValues, 0.25, 0.5f, false, false}},
                  true, seed, TdRows::Auto);
  run_and_compare({{17, 100, WeightKind::Normal, 0.5, 0.5f, false, false},
                   {40, 576, WeightKind::FewValues, 0.75, 0.5f, false, false},
                   {3, 4099, WeightKind::SignedZeros, 0.5, 1.0f, false, false}},
                  true, seed, TdRows::Auto);
}

// W and W' at addresses that are not 16-byte aligned (a view into a larger buffer): every path
// must fall back from its 16-byte loads and stores and give the same bits, and write nothing
// outside W'. Each pointer is shifted alone and both together, through warp rows, block rows
// (shared and register select), group rows and the unfused path; the rows have 4k entries (the
// ones a vector path would take) and one odd length, short and past the on-chip limit.
TEST(CudaTargetedDropout, UnalignedWeightsAndOutputMatchReferenceBitForBit) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::vector<Case> cases = {{7, 576, WeightKind::Normal, 0.5, 0.5f, false, false},
                                   {5, 1024, WeightKind::FewValues, 0.75, 0.5f, false, false},
                                   {3, 4096, WeightKind::SignedZeros, 0.5, 1.0f, false, false},
                                   {4, 333, WeightKind::Normal, 0.25, 0.5f, false, false},
                                   {2, 20000, WeightKind::OneBinade, 0.5, 0.5f, false, false},
                                   {6, 64, WeightKind::Normal, 0.5, 0.5f, true, false}};
  for (auto [w_shift, out_shift] : {std::pair<int64_t, int64_t>{1, 0}, {0, 1}, {1, 3}}) {
    run_and_compare(cases, true, seed, TdRows::Warp, TdBlockSelect::Shared, w_shift, out_shift);
    run_and_compare(cases, true, seed, TdRows::Block, TdBlockSelect::Shared, w_shift, out_shift);
    run_and_compare(cases, true, seed, TdRows::Block, TdBlockSelect::Registers, w_shift,
                    out_shift);
    run_and_compare(cases, true, seed, TdRows::Group, TdBlockSelect::Shared, w_shift, out_shift);
    run_and_compare(cases, false, seed, TdRows::Warp, TdBlockSelect::Shared, w_shift, out_shift);
  }
}

// The register select (block rows of at most 4096 entries, keys held in registers): every
// short row on a block, so the sweep's rows of 1 to 4096 entries all take it, beside rows
// longer than that (the shared select) in the same launch, and its Ladder rows make it stop
// early after the first digit (gamma 36/64: magnitudes up to 35/64) and after the second
// (33/64); then Auto's placement, where the short rows go to warps, and group rows beside
// register-select block rows in one launch; then rows of 1, 2, 3 and 4
// tiles of 1024 with their last tile partial or full, and ties across tiles.
TEST(CudaTargetedDropout, FusedWeightModeRegisterSelectMatchesReferenceBitForBit) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_and_compare(sweep(false), true, seed, TdRows::Block, TdBlockSelect::Registers);
  run_and_compare(sweep(false), true, seed, TdRows::Auto, TdBlockSelect::Registers);
  run_and_compare(sweep(false), true, seed, TdRows::Group, TdBlockSelect::Registers);
  std::vector<Case> cases;
  const WeightKind kinds[] = {WeightKind::Normal, WeightKind::FewValues, WeightKind::AllZero,
                              WeightKind::SignedZeros, WeightKind::OneBinade};
  int i = 0;
  for (int64_t n : {1023, 1025, 2047, 2048, 2049, 3071, 3073, 4095, 4096})
    for (double gamma : {0.001, 0.5, 0.999})
      cases.push_back({5, n, kinds[i++ % 5], gamma, 0.5f, false, false});
  run_and_compare(cases, true, seed, TdRows::Block, TdBlockSelect::Registers);
}

// A small launch of register-select rows (ties, padding, one to four tiles) for racecheck:
// the three passes share the histogram with find_digit's barriers in between.
TEST(CudaTargetedDropout, FusedRegisterSelectSmallLaunch) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_and_compare({{2, 4096, WeightKind::FewValues, 0.5, 0.5f, false, false},
                   {3, 3001, WeightKind::Normal, 0.25, 1.0f, false, false},
                   {2, 1500, WeightKind::AllZero, 0.5, 0.5f, false, false},
                   {4, 37, WeightKind::SignedZeros, 0.7, 0.5f, false, false}},
                  true, seed, TdRows::Block, TdBlockSelect::Registers);
}

// The prefetch kernel (TdBlockSelect::Prefetched): the sweep's rows that it takes (at most
// kTdPrefetchRowMax entries, a multiple of 4), then launches of more rows than the GPU holds
// blocks at once, so that each block walks several rows, its next one copied in while it works
// on the current one (rows of kTdPrefetchRowMax among them, which take the shared select); then
// a launch it does not take (a row of 4099 entries), which runs as Registers.
TEST(CudaTargetedDropout, FusedWeightModePrefetchedMatchesReferenceBitForBit) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<Case> cases;
  for (const Case& c : sweep(false))
    if (c.n <= kTdPrefetchRowMax && c.n % 4 == 0) cases.push_back(c);
  run_and_compare(cases, true, seed, TdRows::Block, TdBlockSelect::Prefetched);
  run_and_compare({{2000, 1024, WeightKind::Normal, 0.5, 0.5f, false, false},
                   {700, 4096, WeightKind::FewValues, 0.9, 0.5f, false, false},
                   {300, 2048, WeightKind::Ladder, 33.0 / 64, 1.0f, false, false},
                   {50, 64, WeightKind::AllZero, 0.5, 0.5f, false, false},
                   {400, kTdPrefetchRowMax, WeightKind::Normal, 0.25, 0.5f, false, false}},
                  true, seed, TdRows::Block, TdBlockSelect::Prefetched);
  run_and_compare({{4096, 4096, WeightKind::Normal, 0.5, 0.5f, false, false}}, true, seed,
                  TdRows::Auto, TdBlockSelect::Prefetched);
  run_and_compare({{9, 4096, WeightKind::Normal, 0.5, 0.5f, false, false},
                   {3, 4099, WeightKind::Normal, 0.5, 0.5f, false, false}},
                  true, seed, TdRows::Block, TdBlockSelect::Prefetched);
}

// A launch of the prefetch kernel small enough for racecheck and synccheck whose blocks still
// walk two rows each (more rows than an H100 or H200 holds blocks at once): the copies into one
// buffer while the block reads the other, behind the barriers that order them.
TEST(CudaTargetedDropout, FusedPrefetchedSmallLaunch) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_and_compare({{900, 64, WeightKind::Normal, 0.5, 0.5f, false, false},
                   {40, 1024, WeightKind::FewValues, 0.5, 0.5f, false, false},
                   {3, 4096, WeightKind::SignedZeros, 0.25, 1.0f, false, false},
                   {2, kTdPrefetchRowMax, WeightKind::FewValues, 0.5, 0.5f, false, false}},
                  true, seed, TdRows::Block, TdBlockSelect::Prefetched);
}

// Rows too long to stage, whose first pass sets aside the keys near their threshold in shared
// memory (window_select): a small launch for racecheck and synccheck. The rows of real weights
// find the k-th key's first digit in the window; those of few values tie at the threshold.
TEST(CudaTargetedDropout, FusedWindowSmallLaunch) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_and_compare({{2, 20000, WeightKind::Normal, 0.5, 0.5f, false, false},
                   {1, 65536, WeightKind::Normal, 0.3, 1.0f, false, false},
                   {2, 16385, WeightKind::FewValues, 0.5, 0.5f, false, false},
                   {3, 300, WeightKind::Normal, 0.5, 0.5f, false, false}},
                  true, seed, TdRows::Block);
}

TEST(CudaTargetedDropout, UnfusedWeightModeMatchesReferenceBitForBit) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_and_compare(sweep(false), false, seed);
}

TEST(CudaTargetedDropout, FusedUnitModeMatchesReferenceBitForBit) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_and_compare(sweep(true), true, seed);
}

TEST(CudaTargetedDropout, UnfusedUnitModeMatchesReferenceBitForBit) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_and_compare(sweep(true), false, seed);
}

// Rows longer than the shared-memory stage (the window's path, and the second pass over the
// row where the window misses) and the largest shapes.
TEST(CudaTargetedDropout, LongRowsMatchReference) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::vector<Case> cases = {{2, 65536, WeightKind::Normal, 0.5, 0.5f, false, false},
                                   {1, 1000000, WeightKind::Mixed, 0.75, 0.66f, false, false},
                                   {1, 1000003, WeightKind::FewValues, 0.3, 1.0f, false, false},
                                   {4, 70001, WeightKind::SignedZeros, 0.99, 0.5f, false, false},
                                   {2, 65536, WeightKind::Ladder, 36.0 / 64, 0.5f, false, false},
                                   {2, 65536, WeightKind::Ladder, 33.0 / 64, 0.5f, false, false},
                                   {65536, 16, WeightKind::Normal, 0.5, 0.5f, true, false}};
  run_and_compare(cases, true, seed);
  run_and_compare(cases, false, seed);
}

// A model's worth of layers in one grouped launch, mixed sizes.
TEST(CudaTargetedDropout, GroupedLaunchOfManyLayers) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<Case> cases;
  for (int i = 0; i < 130; ++i)  // more than one table's worth of tasks
    cases.push_back({16 + i % 7, 144 + 9 * (i % 5), WeightKind::Normal, 0.5, 0.5f, false, false});
  run_and_compare(cases, true, seed);
}

// Unit and weight tasks alternating, more than one table's worth: unit mode's three grouped
// launches split their tables the same way.
TEST(CudaTargetedDropout, GroupedLaunchOfManyUnitLayers) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<Case> cases;
  for (int i = 0; i < 130; ++i)
    cases.push_back({9 + i % 11, 20 + 7 * (i % 6), WeightKind::Mixed, 0.5, 0.5f, i % 2 == 0,
                     i % 6 == 0});
  run_and_compare(cases, true, seed);
}

// The whole-model launch ahead of a training step (precompute_targeted_dropout) checks a
// step's weights for NaN/Inf one step late: an Inf put into the second layer is not reported by
// the call that launched on it, but by the next one (or finish_targeted_dropout_checks), naming
// that layer; the layers' W' of a clean step are the CPU's bit for bit.
TEST(CudaTargetedDropout, PrecomputedStepMatchesCpuAndChecksWeightsOneStepLate) {
  SKIP_WITHOUT_GPU();
  TargetedDropoutConfig cfg;
  cfg.mode = TargetedDropoutConfig::Mode::Weight;
  cfg.gamma = 0.5;
  cfg.alpha = 0.5f;
  auto build = [&](Device d) {
    auto model = std::make_shared<Sequential>();
    model->add(std::make_shared<Linear>(30, 20));
    model->add(std::make_shared<ReLU>());
    model->add(std::make_shared<Linear>(20, 10));
    model->reset_parameters(5);
    configure_targeted_dropout(*model, cfg);
    model->to(d);
    model->train();
    return model;
  };
  const auto cpu = build(Device::CPU), gpu = build(Device::CUDA);
  const uint64_t seed = fresh_seed(), step = 3;
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto gpu_layers = targetable_layers(*gpu), cpu_layers = targetable_layers(*cpu);
  ASSERT_EQ(gpu_layers.size(), 2u);
  // effective() hands out the precomputed W' (once), which must be the CPU's bit for bit.
  precompute_targeted_dropout(*gpu, seed, step);
  for (size_t i = 0; i < gpu_layers.size(); ++i) {
    TargetableLayer& g = *gpu_layers[i].second;
    TargetableLayer& c = *cpu_layers[i].second;
    EXPECT_EQ(g.targeted().effective(g.weight(), true, seed, step).to_vector<float>(),
              c.targeted().effective(c.weight(), true, seed, step).to_vector<float>())
        << gpu_layers[i].first;
  }
  // A whole forward pass on a precomputed step, against the CPU's to fp32 rounding.
  precompute_targeted_dropout(*gpu, seed, step);
  for (auto* m : {cpu.get(), gpu.get()}) m->set_rng(seed, step);
  const Tensor x = Tensor::full({4, 30}, 0.25);
  const std::vector<float> want = cpu->forward(x).to_vector<float>();
  const std::vector<float> got = gpu->forward(x.to(Device::CUDA)).to_vector<float>();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << i;
  Tensor w = gpu_layers[1].second->weight();
  std::vector<float> bad = w.to_vector<float>();
  bad[7] = INFINITY;
  w.copy_(Tensor::from_vector(bad, w.shape(), Device::CUDA));
  precompute_targeted_dropout(*gpu, seed, step + 1);  // checks step 3's (finite) weights
  const std::string msg = error_message([&] { finish_targeted_dropout_checks(); });
  EXPECT_NE(msg.find("'2'"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("'0'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("non-finite"), std::string::npos) << msg;
}

// Weight and unit layers, short rows and rows longer than shared memory, in one call.
TEST(CudaTargetedDropout, GroupedLaunchMixesModesAndRowLengths) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::vector<Case> cases = {{9, 1024, WeightKind::Normal, 0.5, 0.5f, false, false},
                                   {5, 1025, WeightKind::FewValues, 0.5, 0.5f, false, false},
                                   {33, 30, WeightKind::Mixed, 0.25, 0.5f, true, false},
                                   {7, 20000, WeightKind::Normal, 0.9, 0.3f, false, false},
                                   {1, 1, WeightKind::Normal, 1.0, 1.0f, false, false},
                                   {12, 577, WeightKind::Denormals, 0.6, 0.5f, true, true},
                                   {100, 576, WeightKind::SignedZeros, 0.5, 0.75f, false, false}};
  run_and_compare(cases, true, seed);
}

// The unfused pipeline on a few small odd shapes of both modes, ties included: small enough for
// compute-sanitizer's racecheck, which takes minutes over the full sweeps' CUB sorts.
TEST(CudaTargetedDropout, UnfusedSmallOddShapes) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::vector<Case> cases = {{3, 37, WeightKind::FewValues, 0.5, 0.5f, false, false},
                                   {5, 129, WeightKind::Normal, 0.3, 1.0f, false, false},
                                   {17, 9, WeightKind::Mixed, 0.5, 0.5f, true, false},
                                   {4, 33, WeightKind::SignedZeros, 0.75, 0.5f, true, true}};
  run_and_compare(cases, false, seed);
}

// The error tests' fused paths: short rows on a warp, a block (shared select, then register
// select) or a group of 4 warps each; path kFusedPaths is the unfused pipeline.
constexpr TdRows kPathRows[] = {TdRows::Warp, TdRows::Block, TdRows::Block, TdRows::Group};
constexpr TdBlockSelect kPathSelect[] = {TdBlockSelect::Shared, TdBlockSelect::Shared,
                                         TdBlockSelect::Registers, TdBlockSelect::Shared};
constexpr int kFusedPaths = 4;
void run_fused_path(int path, const std::vector<TdTask>& tasks, TdCudaWorkspace& ws) {
  targeted_dropout_fused_cuda(tasks, 1, ws, kPathRows[path], kPathSelect[path]);
}

// A task over w (rows x n, k targeted per row, alpha 0.5) uploaded to the GPU with its W' and
// mask buffers; `keep` holds the three tensors until the task has run.
TdTask device_task(std::vector<Tensor>& keep, const std::vector<float>& w, int64_t rows,
                   int64_t n, int64_t k, uint64_t stream, const std::string& name) {
  keep.push_back(Tensor::from_vector(w, {rows, n}, Device::CUDA));
  keep.push_back(Tensor::empty({rows, n}, DType::F32, Device::CUDA));
  keep.push_back(Tensor::empty({rows, 4 * mask_words_per_row(n)}, DType::U8, Device::CUDA));
  TdTask t;
  t.w = keep[keep.size() - 3].data<float>();
  t.w_out = keep[keep.size() - 2].data<float>();
  t.mask = reinterpret_cast<uint32_t*>(keep.back().raw_data());
  t.rows = rows;
  t.n = n;
  t.k = k;
  t.drop_threshold = bernoulli_threshold(0.5f);
  t.stream = stream;
  t.name = name;
  return t;
}

// Runs `tasks` on fused path `path` (kFusedPaths: the unfused pipeline) and returns the error the
// non-finite check raises.
std::string nonfinite_error(int path, const std::vector<TdTask>& tasks) {
  TdCudaWorkspace ws;
  if (path < kFusedPaths) run_fused_path(path, tasks, ws);
  else targeted_dropout_unfused_cuda(tasks, 1, ws);
  return error_message([&] { td_check_nonfinite(tasks, ws); });
}

// Three layers in one launch (one pipeline each when unfused), an Inf in the middle one only:
// the error names that layer and no other.
TEST(CudaTargetedDropout, NonFiniteWeightNamesTheLayer) {
  SKIP_WITHOUT_GPU();
  const std::vector<std::string> names = {"blocks.0.fc", "blocks.1.fc", "blocks.2.fc"};
  for (int path = 0; path <= kFusedPaths; ++path) {
    SCOPED_TRACE("path " + std::to_string(path));
    std::vector<Tensor> keep;  // the device buffers, alive until the check has run
    std::vector<TdTask> tasks;
    for (size_t i = 0; i < names.size(); ++i) {
      std::vector<float> w(64 * 10, 0.5f);
      if (i == 1) w[333] = INFINITY;
      tasks.push_back(device_task(keep, w, 64, 10, 5, td_stream(1, i), names[i]));
    }
    const std::string msg = nonfinite_error(path, tasks);
    EXPECT_NE(msg.find("'blocks.1.fc'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("non-finite"), std::string::npos) << msg;
    for (const char* other : {"blocks.0.fc", "blocks.2.fc"})
      EXPECT_EQ(msg.find(other), std::string::npos) << msg;
  }
}

// The flags are not cleared per launch: each launch writes its own mark. So a clean launch on
// the workspace of one that found an Inf passes its check, and a check started after the bad
// launch still fails after a clean launch has run (training reads step s's flags during s + 1).
TEST(CudaTargetedDropout, NonFiniteFlagOfAnEarlierLaunchIsNotReadAsANewOne) {
  SKIP_WITHOUT_GPU();
  for (int path = 0; path <= kFusedPaths; ++path) {
    SCOPED_TRACE("path " + std::to_string(path));
    const auto launch = [&](const std::vector<TdTask>& tasks, TdCudaWorkspace& ws) {
      if (path < kFusedPaths) run_fused_path(path, tasks, ws);
      else targeted_dropout_unfused_cuda(tasks, 1, ws);
    };
    std::vector<Tensor> keep;  // the device buffers, alive until the checks have run
    std::vector<float> w(32 * 12, 0.25f);
    const TdTask fine = device_task(keep, w, 32, 12, 6, td_stream(3, 0), "head.fine");
    w[100] = NAN;
    const TdTask bad = device_task(keep, w, 32, 12, 6, td_stream(3, 1), "head.bad");
    TdCudaWorkspace ws;
    launch({fine, bad}, ws);
    EXPECT_NE(error_message([&] { td_check_nonfinite({fine, bad}, ws); }).find("'head.bad'"),
              std::string::npos);
    launch({fine, fine}, ws);
    EXPECT_NO_THROW(td_check_nonfinite({fine, fine}, ws));
    launch({fine, bad}, ws);
    TdNonfiniteCheck check;
    check.start({fine, bad}, ws);
    launch({fine, fine}, ws);
    EXPECT_NE(error_message([&] { check.finish(); }).find("'head.bad'"), std::string::npos);
  }
}

// An Inf in rows of real weights (no ties to rank, a multiple of 4 entries: the fused kernel's
// aligned steps) is found wherever it lies: in a block row's whole steps, in its general
// remainder past them, and in the partial last step of a warp row. Each launch holds a finite
// layer beside the bad one, and the error names only the bad one.
TEST(CudaTargetedDropout, NonFiniteInAlignedRowsNamesTheLayer) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  struct Spot {
    int64_t rows, n, row, col;
  };
  // 1028 = one whole step of a block row and 4 entries past it; 144 = a warp row's whole step
  // and a partial one.
  for (const Spot spot : {Spot{8, 1028, 2, 5}, Spot{8, 1028, 3, 1025}, Spot{16, 144, 1, 140}})
    for (int path = 0; path <= kFusedPaths; ++path) {
      SCOPED_TRACE("n " + std::to_string(spot.n) + ", column " + std::to_string(spot.col) +
                   ", path " + std::to_string(path));
      std::vector<Tensor> keep;  // the device buffers, alive until the check has run
      std::vector<TdTask> tasks;
      for (const std::string name : {"stage.fine", "stage.bad"}) {
        std::vector<float> w = make_weights(spot.rows * spot.n, WeightKind::Normal, rng);
        if (name == "stage.bad") w[spot.row * spot.n + spot.col] = INFINITY;
        tasks.push_back(device_task(keep, w, spot.rows, spot.n, spot.n / 2,
                                    td_stream(2, tasks.size()), name));
      }
      const std::string msg = nonfinite_error(path, tasks);
      EXPECT_NE(msg.find("'stage.bad'"), std::string::npos) << msg;
      EXPECT_EQ(msg.find("stage.fine"), std::string::npos) << msg;
    }
}

// Rows too long for the fused kernel's 32-bit column index are refused before anything touches
// the device, with the layer and its shape: no GPU needed (nor any memory behind the pointers).
TEST(CudaTargetedDropout, FusedRefusesRowsPastItsColumnIndex) {
  for (const int64_t n : {kTdFusedRowMax + 1, int64_t{1} << 31, int64_t{1} << 40}) {
    for (int path = 0; path < kFusedPaths; ++path) {
      SCOPED_TRACE("n " + std::to_string(n) + ", path " + std::to_string(path));
      TdTask t;
      t.rows = 2;
      t.n = n;
      t.k = n / 2;
      t.name = "embed.huge";
      TdCudaWorkspace ws;
      expect_error([&] { run_fused_path(path, {t}, ws); },
                   {"embed.huge", "[2, " + std::to_string(n) + "]", "too large"});
    }
  }
}

TEST(CudaTargetedDropout, CountOutsideTheRowNamesTheLayer) {
  SKIP_WITHOUT_GPU();
  // k beyond the row (or below 0) has no threshold to find: an error before any launch, on
  // every path, as on the CPU.
  Tensor dw = Tensor::from_vector(std::vector<float>(8 * 2000, 0.25f), {8, 2000}, Device::CUDA);
  Tensor out = Tensor::empty({8, 2000}, DType::F32, Device::CUDA);
  Tensor mask = Tensor::empty({8, 4 * mask_words_per_row(2000)}, DType::U8, Device::CUDA);
  for (int64_t n : {int64_t{100}, int64_t{2000}}) {  // a warp row and a block row
    for (int64_t k : {int64_t{-1}, n + 1}) {
      for (int path = 0; path <= kFusedPaths; ++path) {
        SCOPED_TRACE("n " + std::to_string(n) + ", k " + std::to_string(k) + ", path " +
                     std::to_string(path));
        TdTask t;
        t.w = dw.data<float>();
        t.w_out = out.data<float>();
        t.mask = reinterpret_cast<uint32_t*>(mask.raw_data());
        t.rows = 8;
        t.n = n;
        t.k = k;
        t.name = "blocks.3.conv2";
        TdCudaWorkspace ws;
        try {
          if (path < kFusedPaths) run_fused_path(path, {t}, ws);
          else targeted_dropout_unfused_cuda({t}, 1, ws);
          FAIL() << "expected an error";
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("blocks.3.conv2"), std::string::npos) << e.what();
          EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
        }
      }
    }
  }
  // A model's tasks may span several launches (a fused launch's table holds 96): a bad count in
  // the last of 100 layers is found before the first launch, so no layer's output is written.
  const int64_t layers = 100, n = 40;
  Tensor outs = Tensor::full({layers, n}, 7.0, DType::F32, Device::CUDA);
  Tensor masks = Tensor::empty({layers, 4 * mask_words_per_row(n)}, DType::U8, Device::CUDA);
  std::vector<TdTask> tasks(static_cast<size_t>(layers));
  for (int64_t i = 0; i < layers; ++i) {
    TdTask& t = tasks[static_cast<size_t>(i)];
    t.w = dw.data<float>();
    t.w_out = outs.data<float>() + i * n;
    t.mask = reinterpret_cast<uint32_t*>(masks.raw_data()) + i * mask_words_per_row(n);
    t.rows = 1;
    t.n = n;
    t.k = n / 2;
    t.drop_threshold = bernoulli_threshold(1.0f);
    t.stream = td_stream(0, static_cast<uint64_t>(i));
    t.name = "layers." + std::to_string(i);
  }
  tasks.back().k = n + 1;
  for (int path = 0; path <= kFusedPaths; ++path) {
    SCOPED_TRACE("100 layers, path " + std::to_string(path));
    TdCudaWorkspace ws;
    try {
      if (path < kFusedPaths) run_fused_path(path, tasks, ws);
      else targeted_dropout_unfused_cuda(tasks, 1, ws);
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("layers.99"), std::string::npos) << e.what();
    }
    const std::vector<float> got = outs.to_vector<float>();
    EXPECT_EQ(std::count(got.begin(), got.end(), 7.0f), layers * n) << "a layer was written";
  }
}

TEST(CudaTargetedDropout, MaskGradMatchesReference) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(fresh_seed());
  for (auto [rows, n] : std::vector<std::pair<int64_t, int64_t>>{
           {37, 77}, {1, 1}, {5, 32}, {3, 33}, {1000, 576}, {2, 70001}}) {
    SCOPED_TRACE("[" + std::to_string(rows) + ", " + std::to_string(n) + "]");
    const std::vector<float> g = make_weights(rows * n, WeightKind::Normal, rng);
    std::vector<uint32_t> mask(rows * mask_words_per_row(n));
    for (auto& m : mask) m = static_cast<uint32_t>(rng());
    std::vector<float> want(g.size());
    td_mask_grad_cpu(g.data(), mask.data(), rows, n, want.data());
    Tensor dg = Tensor::from_vector(g, {rows, n}, Device::CUDA);
    std::vector<uint8_t> mb(mask.size() * 4);
    std::memcpy(mb.data(), mask.data(), mb.size());
    Tensor dm = Tensor::from_vector(mb, {static_cast<int64_t>(mb.size())}, Device::CUDA);
    Tensor out = Tensor::empty({rows, n}, DType::F32, Device::CUDA);
    td_mask_grad_cuda(dg.data<float>(), reinterpret_cast<const uint32_t*>(dm.raw_data()), rows,
                      n, out.data<float>());
    EXPECT_EQ(out.to_vector<float>(), want);
  }
}

}  // namespace
}  // namespace tdrop::testing
