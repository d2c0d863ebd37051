// Targeted dropout (Gomez et al. 2019) on a weight viewed as rows W[r, :] of length n.
//
// Weight mode: in each row the k = floor(gamma * n) entries of smallest |w| are targeted, the
//   order being (|w| bit pattern, column index): magnitudes compare as integers
//   (bits & 0x7fffffff), ties go to the lower column, so exactly k entries are targeted.
// Unit mode: rows are ranked by squared L2 norm (computed in the canonical order of
//   unit_norm_sq below, so every device gets the same bits), ties to the lower row; the
//   k = floor(gamma * rows) smallest rows are targeted.
// Each targeted entry (or row; or, with per_weight_draws, each entry of a targeted row) is
// dropped when its Philox draw fires with probability alpha: draw index = element index
// r * n + c (or the row index r for per-row draws) in stream `stream` under `seed`.
// Outputs: W' (dropped entries +0.0, kept entries bit-identical to W; no rescaling) and a bit
// mask, one bit per entry, 1 = kept, each row starting on a fresh 32-bit word
// (mask_words_per_row(n) words per row, padding bits 0). The gradient reaching W is dW' * mask.
//
// Four implementations compute the same bits: the CPU reference and the CPU training path
// (targeted_dropout.cpp), an unfused CUDA pipeline built from separate kernels and CUB
// (targeted_dropout_unfused.cu), and the fused grouped CUDA kernel (targeted_dropout_fused.cu).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/philox.h"
#include "core/readback.h"

namespace tdrop {

struct TdTask {
  const float* w = nullptr;  // [rows, n], row-major
  float* w_out = nullptr;    // [rows, n]
  uint32_t* mask = nullptr;  // [rows, mask_words_per_row(n)]
  int64_t rows = 0, n = 0;
  int64_t k = 0;             // targeted entries per row (weight) or targeted rows (unit)
  uint32_t drop_threshold = 0;  // bernoulli_threshold(alpha)
  uint64_t stream = 0;
  bool unit = false;
  bool per_weight_draws = false;  // unit mode: one draw per entry of a targeted row
  std::string name;               // layer name, for errors
};

TDROP_HD int64_t mask_words_per_row(int64_t n) { return (n + 31) / 32; }
// Stream of layer `layer_id` at training step `step`.
TDROP_HD uint64_t td_stream(uint64_t step, uint64_t layer_id) {
  return kStreamTargeted + step * 65536ull + (layer_id & 0xffff);
}
// Number of targeted items out of `count` for fraction gamma (computed once, on the host).
int64_t td_count(double gamma, int64_t count);

// Magnitude key of a float: its bits without the sign. Keys >= kNonFiniteKey are Inf/NaN.
TDROP_HD uint32_t magnitude_key(uint32_t bits) { return bits & 0x7fffffffu; }
inline constexpr uint32_t kNonFiniteKey = 0x7f800000u;

// The canonical squared L2 norm of a row: 256 interleaved partial sums in double (lane l sums
// entries l, l+256, ... in order), then a fixed pairwise tree. Each square of a float is exact
// in double, so any device following this order gets identical bits.
inline constexpr int kNormLanes = 256;
double unit_norm_sq_reference(const float* row, int64_t n);

// Throws naming task.name unless 0 <= k <= n (weight mode) or rows (unit mode). Every path
// checks it: a CUDA select asked for a rank outside the row would find no threshold at all.
void td_check_count(const TdTask& task);
// CPU reference. Throws tdrop::Error naming task.name on a NaN/Inf weight.
void targeted_dropout_reference(const TdTask& task, uint64_t seed);
// The CPU training path: the reference's bits, several times faster (radix select per row, no
// data-dependent branch per entry). Same errors.
void targeted_dropout_cpu(const TdTask& task, uint64_t seed);
// Gradient through the mask: out[r, c] = mask bit ? g[r, c] : 0.
void td_mask_grad_cpu(const float* g, const uint32_t* mask, int64_t rows, int64_t n, float* out);

// CUDA. Each returns after queueing work on cuda_stream(); errors (non-finite weights) are
// reported by td_check_nonfinite once the device has finished.
class TdCudaWorkspace;
// How the fused kernel places weight-mode rows of at most kTdWarpRowMax entries ("short" rows;
// longer rows always get a block each). Warp: one warp per row, kTdWarpRowsPerBlock rows per
// block, no block barrier. Block: a whole block per row. Auto: warps when the launch's short
// rows fill at least one block per multiprocessor, else blocks: a warp walks its row alone, so
// a launch with few rows wants each spread over a block (on an H200 the MLP's 400 rows took
// 29.3 us on warps, 50 blocks for 132 SMs, and 15.7 us on blocks; ResNet-32's 1120 rows, 140
// blocks, 25.8 us on warps and 28.5 us on blocks). Group: a group of 4 warps per row, 2 rows per
// block: a quarter of a warp's serial chain per thread, for short rows too few to fill the GPU
// on warps (not yet timed on a GPU, so Auto does not choose it). All four give the same bits.
enum class TdRows { Auto, Warp, Block, Group };
inline constexpr int64_t kTdWarpRowMax = 1024;
inline constexpr int64_t kTdWarpRowsPerBlock = 8;
// How the fused kernel finds the k-th key of a row that a block owns (every long row; short
// rows under TdRows::Block). Both are a radix select on 11, 11 and 9 bits with the histogram in
// shared memory. Registers (the default): rows of at most kTdRegisterRowMax entries stay in
// registers, 4 to 16 keys per thread, across all three passes, with no bounds test per key and no
// candidate list; longer rows take the shared select. Shared: each pass reads the row again from
// where the first staged it, and the keys of the first digit's bin are set aside for the last
// pass. On an H200 the register select took 4096 x 4096 in 0.84x the shared select's time,
// VGG-16's layers in 0.90x (bench/results/2026-11-28-h200). Prefetched: Registers, with each
// block resident for the whole launch and its next row copied into shared memory while it works
// on the current one (cp.async), for a launch whose weight rows all go to blocks, have at most
// kTdPrefetchRowMax entries, a multiple of 4, and start 16-byte aligned (rows longer than
// kTdRegisterRowMax take the shared select, from the copy); any other launch runs as Registers.
// Not yet timed on a GPU, so not the default. All three give the same bits.
enum class TdBlockSelect { Shared, Registers, Prefetched };
inline constexpr int64_t kTdRegisterRowMax = 4096;
// VGG-16's longest rows (512 x 3 x 3): two row buffers of it beside the select's shared state
// still let 4 blocks share an H100's or H200's multiprocessor (4 x 53 KB of 228 KB).
inline constexpr int64_t kTdPrefetchRowMax = 4608;
// Longest row the fused kernel takes: it indexes a row's columns in 32 bits, with room for a
// step of up to 1024 columns past the end.
inline constexpr int64_t kTdFusedRowMax = (int64_t{1} << 31) - 4096;
// Whether one fused launch of `tasks` puts its short rows on warps, on a device with
// `multiprocessors` SMs (host-only, so the choice is tested without a GPU).
bool td_short_rows_on_warps(std::span<const TdTask> tasks, TdRows rows, int multiprocessors);
// All tasks in one launch per phase (weight mode: one launch in total for up to 96 layers).
void targeted_dropout_fused_cuda(const std::vector<TdTask>& tasks, uint64_t seed,
                                 TdCudaWorkspace& ws, TdRows rows = TdRows::Auto,
                                 TdBlockSelect select = TdBlockSelect::Registers);
// One pipeline of separate kernels per task, as a general framework would compose it.
void targeted_dropout_unfused_cuda(const std::vector<TdTask>& tasks, uint64_t seed,
                                   TdCudaWorkspace& ws);
// The non-finite flags of one launch: a kernel that finds a NaN/Inf in a task's weights writes
// `mark` into p[task]. Each launch has a new mark, so a flag left by an earlier launch reads as
// clear and the flags need no zeroing per launch (a memset less beside a step's one launch).
struct TdFlags {
  int* p = nullptr;
  int mark = 1;
};
// Throws naming the first task whose weights held a NaN/Inf (synchronises the stream).
void td_check_nonfinite(const std::vector<TdTask>& tasks, TdCudaWorkspace& ws);
// The same check in two halves, so training can look at step s's flags during step s + 1
// instead of draining the GPU: start() queues the flags' copy right after the launch,
// finish() waits for it and throws naming the layer (a no-op when nothing is pending).
class TdNonfiniteCheck {
 public:
  void start(const std::vector<TdTask>& tasks, TdCudaWorkspace& ws);
  void finish();

 private:
  struct Layer {
    std::string name;
    int64_t rows, n;
  };
  Readback flags_;
  int mark_ = 0;  // the mark of the launch whose flags are being read
  std::vector<Layer> layers_;
};
void td_mask_grad_cuda(const float* g, const uint32_t* mask, int64_t rows, int64_t n, float* out);

// Device scratch reused across steps (so steady-state training allocates nothing).
class TdCudaWorkspace {
 public:
  TdCudaWorkspace();
  ~TdCudaWorkspace();
  TdCudaWorkspace(const TdCudaWorkspace&) = delete;
  TdCudaWorkspace& operator=(const TdCudaWorkspace&) = delete;
  // Returns a device buffer of at least `bytes` for slot `slot` (grows, never shrinks).
  void* buffer(int slot, size_t bytes);
  // The flags of the next launch over `count` tasks, with its mark.
  TdFlags nonfinite_flags(size_t count);
  int flag_mark() const { return flag_mark_; }  // the last launch's mark

 private:
  struct Buf {
    void* p = nullptr;
    size_t bytes = 0;
  };
  std::vector<Buf> bufs_;
  int flag_mark_ = 0;
};

}  // namespace tdrop
