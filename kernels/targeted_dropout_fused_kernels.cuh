// Fused targeted dropout: one pass over W per row, all targeted layers of a model in one launch.
//
// Weight mode (td_weight_fused_kernel): the k-th smallest magnitude key of each row is found by a
// 3-pass radix select on the 31-bit keys (digits of 11, 11 and 9 bits, histogram in shared
// memory), then one final pass draws Philox numbers for the targeted entries and writes W' plus
// the 1-bit mask. A block owns a row. The first select pass reads the row from global memory and
// stages it in shared memory when it fits; the second pass also copies the keys that share the
// first digit (a few % of a row of real weights) aside, so the third pass reads only those; a
// row whose k-th key is the only one left in its bin after the second digit (the usual case)
// skips the third pass. A row too long to stage sets aside in its first pass the keys whose first
// digit is near where a sample of the row puts the k-th key's (window_select), and when it is
// there the later select passes read those: the row is read twice, not three times. Each thread
// handles 4 consecutive entries at a time, and adds each key to the histogram with one shared
// atomic (hist_add4). In the final pass one Philox call (4 numbers) serves a thread's 4 entries
// (its round keys computed once on the host and passed as a kernel parameter, PhiloxKeys), and a
// warp's 128 entries become 4 mask words; what a thread decides for its 4 entries (one
// compare per key against the row's limit, the draws) is targeted_dropout_quad.h, which a CPU
// test also runs against the reference. Ties at the threshold are ranked by column with a
// scan, only when the threshold value is shared by more entries than remain to be targeted (rare
// with real weights; common after pruning). With TdBlockSelect::Registers (the default), a block
// row of at most 4096 entries keeps its keys in registers (register_select) and walks them in
// all three passes instead of re-reading the row and setting candidates aside.
//
// Short rows (n <= kTdWarpRowMax, e.g. every layer of ResNet-32) would leave most of a block
// idle and pay its barriers: each warp takes a row of its own (short_row with WarpRow), held in
// registers, and finds the k-th key bit by bit with warp-wide sums (short_select, in
// targeted_dropout_short_select.h so that a CPU test runs it too; it stops at the first bit
// where the keys left with a 0 are exactly those still to target), so 8 rows share a block and
// no block barrier is involved. Its final pass is block_row's, with the same layout of 4 entries
// per lane. TdRows::Group gives such a row 4 warps instead (GroupRow: 2 rows per block, the
// warps' sums combined through shared memory behind a barrier of the group's 128 threads).
//
// This header holds the weight mode's device code. Unit mode's kernels are in
// targeted_dropout_unit_kernels.cuh, the table of layers a launch carries in
// targeted_dropout_task_table.cuh, and what the host works out for a launch in
// targeted_dropout_fused_plan.cuh (internal linkage throughout: see there).
#pragma once
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/targeted_dropout_device.cuh"
#include "kernels/targeted_dropout_task_table.cuh"
#include "kernels/targeted_dropout_quad.h"
#include "kernels/targeted_dropout_radix_select.h"
#include "kernels/targeted_dropout_short_select.h"

namespace tdrop {

using namespace td_device;

namespace {

constexpr int kEntries = 4;  // consecutive entries per thread
static_assert(kEntries == 4, "td_targeted4, td_dropped4 and short_select take 4 per thread");
constexpr int kBlockSpan = kThreads * kEntries;  // entries a block row's threads take per step

constexpr int kWarpGroupsMax = static_cast<int>(kTdWarpRowMax / (32 * 4));
static_assert(kWarpGroupsMax == 8, "a warp row is at most 8 groups of 128 entries");
static_assert(kWarps == kTdWarpRowsPerBlock,
              "td_short_rows_on_warps counts a block per kWarps rows");

constexpr int kBinsPerThread = kTdRadixBins / kThreads;
static_assert(kBinsPerThread == 8, "each thread scans 8 consecutive bins (two uint4)");
// After the first digit, the keys sharing it are copied to shared memory while the second
// pass counts them, so the third pass reads only those (a few % of a row of real weights)
// instead of the whole row. A row whose first-digit bin holds more keys than this is read whole.
constexpr int kCandidates = 2048;
// A row too long to stage (n > the launch's staged floats) is read from global memory by every
// select pass. Its first pass also sets aside, in the block's dynamic shared memory (a window of
// kWindowFloats entries, which 4 blocks of 256 threads on an SM of 228 KB leave room for), the
// keys whose first digit lies where the row's first kWindowSample keys put the k-th key's; when
// the k-th key's digit is found there, the later passes read the window, not the row (window_pass).
// -DTDROP_TD_WINDOW=0 reads such rows three times, as before (to time the window against).
#ifndef TDROP_TD_WINDOW
#define TDROP_TD_WINDOW 1
#endif
constexpr int kWindowTiles = 4;
constexpr int kWindowSample = kWindowTiles * kBlockSpan;
constexpr int64_t kWindowFloats = 10000;
// A launch with windows stages rows of up to kWindowFloats entries at least, so a row it
// windows is longer than that: more than twice the sample.
static_assert(kWindowFloats >= 2 * kWindowSample, "a windowed row is more than its sample");

// Shared state of a block's weight-mode radix select.
struct SelectState {
  __align__(16) unsigned hist[kTdRadixBins + 1];  // + hist_add4's spare bin
  __align__(16) uint32_t cand[kCandidates];
  unsigned scan_scratch[kWarps];
  unsigned digit, remaining, count, ncand;
  // window_pass: the window's first-digit bins, the sample's keys before and up to their end,
  // the keys set aside.
  unsigned win_lo, win_hi, win_below, win_end, nwin;
};

// sm_80 and later reduce a warp in one instruction; the host emulation takes that path too, the
// one the default build (sm_90) runs.
#if __CUDA_ARCH__ >= 800 || defined(TDROP_CUDA_EMULATED)
#define TDROP_TD_WARP_REDUCE 1
#else
#define TDROP_TD_WARP_REDUCE 0
#endif

__device__ __forceinline__ unsigned warp_sum(unsigned v) {
#if TDROP_TD_WARP_REDUCE
  return __reduce_add_sync(0xffffffffu, v);
#else
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
#endif
}

// Warp-wide OR of *any and AND of *all, in place.
__device__ __forceinline__ void warp_or_and(unsigned* any, unsigned* all) {
#if TDROP_TD_WARP_REDUCE
  *any = __reduce_or_sync(0xffffffffu, *any);
  *all = __reduce_and_sync(0xffffffffu, *all);
#else
  for (int o = 16; o > 0; o >>= 1) {
    *any |= __shfl_xor_sync(0xffffffffu, *any, o);
    *all &= __shfl_xor_sync(0xffffffffu, *all, o);
  }
#endif
}

// Counts a thread's 4 keys (bins[i] where active[i]) into the block histogram. Weight
// magnitudes share few exponents, so in the first passes most keys of a warp fall into one bin;
// for sm_90 ptxas compiles each `atomicAdd(&hist[bin], 1u)` to ATOMS.POPC.INC, an increment meant
// for lanes that share an address. Summing lane 0's bin over the warp first and adding it with
// one atomic (since kernel v3) was 3-15 % slower on every long-row case timed on an H200, 10-15 %
// on 4096 x 4096 (bench/results/2026-11-28-h200, variant plainhist), and took 1255 SASS
// instructions in register_select<4> against 833.
// -DTDROP_TD_SPARE_BIN=1 counts the inactive keys too, into a spare bin past the histogram that
// nothing reads: one select (SEL) per key in place of a branch around each atomic (BSSY, BRA,
// BSYNC), and the lanes of inactive keys, most keys after the first pass, share one address.
// Not yet timed on a GPU.
#ifndef TDROP_TD_SPARE_BIN
#define TDROP_TD_SPARE_BIN 0
#endif
__device__ __forceinline__ void hist_add4(unsigned* hist, const unsigned (&bins)[4],
                                          const bool (&active)[4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if (TDROP_TD_SPARE_BIN) atomicAdd(active[i] ? &hist[bins[i]] : &hist[kTdRadixBins], 1u);
    else if (active[i]) atomicAdd(&hist[bins[i]], 1u);
  }
}

// Loads 4 consecutive keys (bit patterns) of a row starting at column c0; missing ones are 0.
__device__ __forceinline__ uint4 load4(const uint32_t* src, int c0, int n, bool vec) {
  if (vec && c0 + 3 < n) return *reinterpret_cast<const uint4*>(src + c0);
  uint4 b;
  b.x = c0 < n ? src[c0] : 0u;
  b.y = c0 + 1 < n ? src[c0 + 1] : 0u;
  b.z = c0 + 2 < n ? src[c0 + 2] : 0u;
  b.w = c0 + 3 < n ? src[c0 + 3] : 0u;
  return b;
}

// What the final pass needs of one row, worked out once per row. Columns are 32-bit: the host
// refuses rows longer than kTdFusedRowMax.
struct FinalRow {
  const uint32_t* src;  // the row's bits: staged in shared memory, or W's row
  float* out;           // the row of W'
  uint32_t* mask;       // the row's mask words
  uint64_t idx0;        // r * n, the element index of the row's entry 0 (for the draws)
  int n;
  bool vec;      // src can be read 16 bytes at a time at columns that are multiples of 4
  bool vec_out;  // n % 4 == 0 and out is 16-byte aligned: W' can be written 16 bytes at a time
};

// Row r of t (n entries) read from src, 16 bytes at a time when vec.
__device__ __forceinline__ FinalRow final_row(const DevTask& t, int64_t r, int n,
                                              const uint32_t* src, bool vec) {
  return FinalRow{src,
                  t.w_out + r * n,
                  t.mask + r * mask_words_per_row(n),
                  static_cast<uint64_t>(r) * static_cast<uint64_t>(n),
                  n,
                  vec,
                  n % 4 == 0 && (reinterpret_cast<uintptr_t>(t.w_out) & 15) == 0};
}

// The final pass for the 4 entries c0..c0+3 of a row: decides (targeted_dropout_quad.h), writes
// W', returns the kept nibble (bit i = entry c0 + i kept; 0 for entries >= n). `tie_rank` is the
// number of entries before c0 with the key cut.T (used only when cut.rank_ties). Sets *bad on
// Inf/NaN. kFull: all 4 entries lie inside the row and fr.vec_out holds, so no entry is tested
// against n: most steps of a long row (for a row of 4096, sm_90 SASS: 157 instructions on the
// common path of a step; 202 with the tests, 64-bit columns and the Philox keys added up).
template <bool kFull>
__device__ __forceinline__ unsigned apply4(const DevTask& t, const FinalRow& fr, int c0, uint4 b,
                                           const TdCut& cut, unsigned tie_rank,
                                           const PhiloxKeys& philox, bool* bad) {
  const int left = fr.n - c0;
  const unsigned valid = kFull || left >= 4 ? 0xfu : left <= 0 ? 0u : (1u << left) - 1u;
  const uint32_t keys[4] = {magnitude_key(b.x), magnitude_key(b.y), magnitude_key(b.z),
                            magnitude_key(b.w)};
  // Entries past the row were loaded as 0, so the largest key speaks for the valid ones.
  *bad |= max(max(keys[0], keys[1]), max(keys[2], keys[3])) >= kNonFiniteKey;
  const unsigned targeted = td_targeted4(keys, valid, cut, tie_rank);
  const unsigned dropped = td_dropped4(targeted, philox, t.stream,
                                       fr.idx0 + static_cast<uint64_t>(c0), t.drop_threshold);
  const uint32_t bits[4] = {b.x, b.y, b.z, b.w};
  float o[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) o[i] = (dropped >> i) & 1u ? 0.0f : __uint_as_float(bits[i]);
  if (kFull || (fr.vec_out && left >= 4)) {
    *reinterpret_cast<float4*>(fr.out + c0) = make_float4(o[0], o[1], o[2], o[3]);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i)
      if ((valid >> i) & 1u) fr.out[c0 + i] = o[i];
  }
  return valid & ~dropped;
}

// Ties among the 4 entries of a thread (for the column rank scan).
__device__ __forceinline__ unsigned ties4(uint4 b, int c0, int n, uint32_t T) {
  return (c0 < n && magnitude_key(b.x) == T) + (c0 + 1 < n && magnitude_key(b.y) == T) +
         (c0 + 2 < n && magnitude_key(b.z) == T) + (c0 + 3 < n && magnitude_key(b.w) == T);
}

// Merges the lanes' kept nibbles into mask words (lane l holds entries 4l..4l+3 of the warp's
// 128, which start at column warp_c0) and writes the words that start inside the row (kFull:
// all of them).
template <bool kFull>
__device__ __forceinline__ void store_mask_words(uint32_t* mask, int warp_c0, int n,
                                                 unsigned nibble) {
  const int lane = threadIdx.x & 31;
  unsigned word = nibble << (4 * (lane & 7));
  word |= __shfl_xor_sync(0xffffffffu, word, 1);
  word |= __shfl_xor_sync(0xffffffffu, word, 2);
  word |= __shfl_xor_sync(0xffffffffu, word, 4);
  const int first = warp_c0 + 32 * (lane >> 3);
  if ((lane & 7) == 0 && (kFull || first < n)) mask[first / 32] = word;
}

// The steps of a row that td_aligned_row admits (targeted_dropout_quad.h: no ties to rank,
// alpha > 0, the row starting on a Philox block) and that is read and written 16 bytes at a time
// (so n % 4 == 0, and each thread's 4 entries of a step lie wholly inside the row or wholly past
// it): the row's conditions tested once instead of every step, round 0's stream half computed
// once, the step's Philox block and mask word advanced by constants, and two compares per entry
// (the decision the CPU test runs as td_dropped4_aligned). 99 SASS instructions a whole step of
// a 4096-entry row (sm_90) where the general step takes 157. The last step, when partial, tests
// which threads' entries lie inside, where kTail (warp rows: ResNet-32's rows of 144, 288 and
// 576 entries each end in one); block rows leave it to the general step (the test pushed their
// kernel past 64 registers into spills). Returns the entries it took. Sets *bad once, from the
// largest key. -DTDROP_TD_ALIGNED_STEPS=0 builds without it, for the benchmark to time both.
#ifndef TDROP_TD_ALIGNED_STEPS
#define TDROP_TD_ALIGNED_STEPS 1
#endif
template <int kSpan, bool kTail>
__device__ __forceinline__ int aligned_steps(const DevTask& t, const FinalRow& fr, int first,
                                             int warp_c0, uint32_t limit,
                                             const PhiloxKeys& philox, bool* bad) {
  static_assert(kSpan % 128 == 0, "a step is whole warps of 4 entries per lane");
  const int lane = threadIdx.x & 31;
  const uint32_t bound = td_draw_bound(t.drop_threshold);
  const PhiloxStreamHead head = philox_stream_head(philox, t.stream);
  uint64_t block = (fr.idx0 + static_cast<uint64_t>(first)) >> 2;
  // The mask word this lane's group of 8 writes in step 0 (store_mask_words' layout), and its
  // first column.
  const int word_c0 = warp_c0 + 32 * (lane >> 3);
  uint32_t* mask = fr.mask + word_c0 / 32;
  const unsigned shift = 4 * (lane & 7);
  uint32_t max_key = 0;
  const auto step = [&](int s, auto last) {
    constexpr bool kLast = decltype(last)::value;  // a partial last step
    const int c0 = s * kSpan + first;
    const bool inside = !kLast || c0 < fr.n;
    uint4 b = make_uint4(0u, 0u, 0u, 0u);
    if (inside) b = *reinterpret_cast<const uint4*>(fr.src + c0);
    const uint32_t keys[4] = {magnitude_key(b.x), magnitude_key(b.y), magnitude_key(b.z),
                              magnitude_key(b.w)};
    max_key = max(max_key, max(max(keys[0], keys[1]), max(keys[2], keys[3])));
    const unsigned dropped =
        td_dropped4_aligned(keys, limit, philox_block(philox, head, block), bound);
    block += kSpan / 4;
    const uint32_t bits[4] = {b.x, b.y, b.z, b.w};
    float o[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) o[i] = (dropped >> i) & 1u ? 0.0f : __uint_as_float(bits[i]);
    if (inside) *reinterpret_cast<float4*>(fr.out + c0) = make_float4(o[0], o[1], o[2], o[3]);
    unsigned word = (inside ? ~dropped & 0xfu : 0u) << shift;
    word |= __shfl_xor_sync(0xffffffffu, word, 1);
    word |= __shfl_xor_sync(0xffffffffu, word, 2);
    word |= __shfl_xor_sync(0xffffffffu, word, 4);
    if ((lane & 7) == 0 && (!kLast || s * kSpan + word_c0 < fr.n)) *mask = word;
    mask += kSpan / 32;
  };
  const int whole = fr.n / kSpan;
#pragma unroll 1
  for (int s = 0; s < whole; ++s) step(s, std::false_type{});
  if constexpr (kTail) {
    if (whole * kSpan < fr.n) step(whole, std::true_type{});
  }
  *bad |= max_key >= kNonFiniteKey;
  return kTail ? fr.n : whole * kSpan;
}

// The final pass over a row whose threads (a block, a group of warps or a warp, `kSpan` entries
// a step) each hold 4 entries a step, entry `first` of the step its first; the row's warps start
// at warp_c0 within the step. `scan(v, &total)`: sum of v over the row's threads before this
// one (total: over all). With kFullSteps, a row that td_aligned_row admits takes aligned_steps,
// and in other rows the steps that lie wholly inside the row take apply4<true>; the rest (the
// last partial step, and every step of a row not read and written 16 bytes at a time) take the
// general path. Of the short rows only the warp rows of the warp-only
// instantiation take it (80 registers, no spill): elsewhere the second copy of the step made
// their functions spill (`nvcc -Xptxas -v`). The trip counts are uniform over the row's
// threads, as the scans need.
template <int kSpan, bool kFullSteps, class Scan>
__device__ __forceinline__ void final_pass(const DevTask& t, const FinalRow& fr, int first,
                                           int warp_c0, const TdCut& cut, const PhiloxKeys& philox,
                                           Scan&& scan, bool* bad) {
  unsigned tie_base = 0;
  const auto step = [&](int base, auto full) {
    constexpr bool kFull = decltype(full)::value;
    const int c0 = base + first;
    const uint4 b = kFull ? *reinterpret_cast<const uint4*>(fr.src + c0)
                          : load4(fr.src, c0, fr.n, fr.vec);
    unsigned tie_rank = 0;
    if (cut.rank_ties) {  // uniform over the row's threads
      unsigned total;
      tie_rank = tie_base + scan(ties4(b, c0, fr.n, cut.T), &total);
      tie_base += total;
    }
    const unsigned kept = apply4<kFull>(t, fr, c0, b, cut, tie_rank, philox, bad);
    store_mask_words<kFull>(fr.mask, base + warp_c0, fr.n, kept);
  };
  int base = 0;
  if (kFullSteps && fr.vec && fr.vec_out) {
    if (TDROP_TD_ALIGNED_STEPS && td_aligned_row(cut, fr.idx0, t.drop_threshold)) {
      base = aligned_steps<kSpan, kSpan == 32 * kEntries>(t, fr, first, warp_c0, cut.limit,
                                                          philox, bad);
    } else {
#pragma unroll 1
      for (; base + kSpan <= fr.n; base += kSpan) step(base, std::true_type{});
    }
  }
#pragma unroll 1
  for (; base < fr.n; base += kSpan) step(base, std::false_type{});
}

// Appends the keys of a thread's 4 that are `taken` to buf, after the *count keys already there:
// one shared atomic per warp (a warp's appends are consecutive). Keys past `capacity` are
// counted but not stored, so that *count tells the caller whether they all fit. All the lanes of
// the warp must call it.
__device__ __forceinline__ void append4(const uint32_t (&keys)[4], const bool (&taken)[4],
                                        uint32_t* buf, unsigned capacity, unsigned* count) {
  const unsigned mine = taken[0] + taken[1] + taken[2] + taken[3];
  const unsigned incl = warp_inclusive_scan(mine);
  unsigned at = 0;
  if ((threadIdx.x & 31) == 31 && incl > 0) at = atomicAdd(count, incl);
  at = __shfl_sync(0xffffffffu, at, 31) + incl - mine;
#pragma unroll
  for (int i = 0; i < 4; ++i)
    if (taken[i]) {
      if (at < capacity) buf[at] = keys[i];
      ++at;
    }
}

// Counts the keys src[0, n) whose bits under pmask equal prefix into the histogram of digit
// kDigit. With kStage, also copies src to `staged` (the row's first read); with kCollect, also
// appends the counted keys to s.cand (the caller knows they fit).
template <int kDigit, bool kStage, bool kCollect>
__device__ __forceinline__ void histogram_pass(const uint32_t* src, int n, bool vec,
                                               uint32_t prefix, uint32_t pmask,
                                               uint32_t* staged, SelectState& s) {
  for (int base = 0; base < n; base += kBlockSpan) {  // uniform trip count
    const int c0 = base + kEntries * threadIdx.x;
    const uint4 b = load4(src, c0, n, vec);
    if (kStage && c0 < n) *reinterpret_cast<uint4*>(staged + c0) = b;
    const uint32_t bits[4] = {b.x, b.y, b.z, b.w};
    uint32_t keys[4];
    unsigned bins[4];
    bool active[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      keys[i] = magnitude_key(bits[i]);
      active[i] = c0 + i < n && (keys[i] & pmask) == prefix;
      bins[i] = (keys[i] & td_digit_mask(kDigit)) >> td_digit_shift(kDigit);
    }
    hist_add4(s.hist, bins, active);
    if (kCollect) append4(keys, active, s.cand, kCandidates, &s.ncand);
  }
}

// Thread t's histogram bins 8t..8t+7 (zeroed behind it with kClear; bin 0 less `bin0_excess`
// keys that are not keys of the row), their sum, and the keys in the bins before them, by a block
// scan. Call it after the barrier that completes the histogram; the caller's next barrier
// releases the scan's scratch.
struct ThreadBins {
  unsigned c[kBinsPerThread];
  unsigned sum, below;
};
template <bool kClear>
__device__ __forceinline__ ThreadBins scan_bins(SelectState& s, unsigned bin0_excess) {
  uint4* mine = reinterpret_cast<uint4*>(s.hist + kBinsPerThread * threadIdx.x);
  const uint4 lo = mine[0], hi = mine[1];
  if (kClear) {
    mine[0] = make_uint4(0, 0, 0, 0);
    mine[1] = make_uint4(0, 0, 0, 0);
  }
  ThreadBins b{{lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w}, 0, 0};
  if (threadIdx.x == 0) b.c[0] -= bin0_excess;
  b.sum = b.c[0] + b.c[1] + b.c[2] + b.c[3] + b.c[4] + b.c[5] + b.c[6] + b.c[7];
  unsigned total;
  b.below = block_inclusive_scan<false>(b.sum, s.scan_scratch, &total) - b.sum;
  return b;
}

// After a histogram pass: finds the digit holding rank `remaining` (thread t scans bins
// 8t..8t+7), publishes it in s.digit/s.remaining/s.count, and zeroes the histogram and the
// candidate count for the next pass. `bin0_excess` keys counted in bin 0 are not keys of the
// row (the register select's padding). Starts and ends with a barrier.
__device__ __forceinline__ void find_digit(unsigned remaining, SelectState& s,
                                           unsigned bin0_excess = 0) {
  __syncthreads();  // the histogram (and any staged row or candidates) is complete
  const ThreadBins b = scan_bins<true>(s, bin0_excess);
  unsigned below = b.below;
  if (below < remaining && remaining <= below + b.sum) {  // exactly one thread holds rank k
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      if (below < remaining && remaining <= below + b.c[i]) {
        s.digit = kBinsPerThread * threadIdx.x + i;
        s.remaining = remaining - below;
        s.count = b.c[i];
      }
      below += b.c[i];
    }
  }
  if (threadIdx.x == 0) s.ncand = 0;
  __syncthreads();
}

// After window_pass has counted its sample: the first-digit bins of the keys of ranks lo and hi
// (1 <= lo <= hi <= the keys counted) into s.win_lo and s.win_hi, the keys counted before the
// first into s.win_below and up to the second into s.win_end. The histogram stays as it is.
// Starts and ends with a barrier.
__device__ __forceinline__ void find_window(unsigned lo, unsigned hi, SelectState& s) {
  __syncthreads();  // the sample is counted
  const ThreadBins b = scan_bins<false>(s, 0);
  unsigned below = b.below;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    if (below < lo && lo <= below + b.c[i]) {
      s.win_lo = kBinsPerThread * threadIdx.x + i;
      s.win_below = below;
    }
    if (below < hi && hi <= below + b.c[i]) {
      s.win_hi = kBinsPerThread * threadIdx.x + i;
      s.win_end = below + b.c[i];
    }
    below += b.c[i];
  }
  __syncthreads();
}

// What window_pass set aside: the keys whose first digit d has d - lo <= width, when taken.
struct Window {
  bool taken = false;
  unsigned lo = 0, width = 0;
};

// The first select pass of a row read from global memory (longer than kWindowFloats): it
// counts every key's first digit and sets aside in `window` (room for `capacity` keys) the keys
// whose first digit lies in the bins of the sample's (the row's first kWindowSample keys) keys
// of ranks k m / n -+ 3 standard deviations (m the sample's size; binomial): where the k-th key's
// digit most likely is. Nothing is set aside when the sample says that those bins hold more of
// the row than 7/8 of the room. The keys set aside are counted in s.nwin, those past the room
// too. Ends with the keys it stored not yet visible to other threads (find_digit's barrier).
__device__ __forceinline__ Window window_pass(const uint32_t* row, int n, int64_t k,
                                              bool aligned, uint32_t* window, unsigned capacity,
                                              SelectState& s) {
  const int first = kEntries * threadIdx.x;
  // Reads keys c0..c0+3 of the row into keys/bins/active (entries past the row inactive).
  const auto read4 = [&](int c0, uint32_t (&keys)[4], unsigned (&bins)[4], bool (&active)[4]) {
    const uint4 b = load4(row, c0, n, aligned);
    const uint32_t bits[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      keys[i] = magnitude_key(bits[i]);
      active[i] = c0 + i < n;
      bins[i] = keys[i] >> td_digit_shift(0);
    }
  };
  uint32_t keys[4];
  unsigned bins[4];
  bool active[4];
#pragma unroll
  for (int g = 0; g < kWindowTiles; ++g) {  // the sample
    read4(kBlockSpan * g + first, keys, bins, active);
    hist_add4(s.hist, bins, active);
  }
  const float share = static_cast<float>(k) / static_cast<float>(n);
  const float mid = share * kWindowSample;
  const float spread = 3.0f * sqrtf(mid * (1.0f - share)) + 1.0f;
  const unsigned rank_lo = static_cast<unsigned>(fmaxf(1.0f, mid - spread));
  const unsigned rank_hi = static_cast<unsigned>(fminf(kWindowSample, mid + spread + 1.0f));
  if (threadIdx.x == 0) s.nwin = 0;
  find_window(rank_lo, rank_hi, s);
  Window w;  // block-uniform
  w.taken = static_cast<uint64_t>(s.win_end - s.win_below) * static_cast<uint64_t>(n) * 8 <=
            static_cast<uint64_t>(capacity) * kWindowSample * 7;
  w.lo = s.win_lo;
  w.width = s.win_hi - s.win_lo;
  // Not taken: a window that no digit falls in (digits are below kTdRadixBins).
  const unsigned lo = w.taken ? w.lo : kTdRadixBins, width = w.taken ? w.width : 0;
  // The whole row, setting keys aside: the sample again (read again, from L2 mostly, rather
  // than held in 16 registers through the barriers), and the keys past it, counted too.
  for (int base = 0; base < n; base += kBlockSpan) {  // uniform trip count
    read4(base + first, keys, bins, active);
    if (base >= kWindowSample) hist_add4(s.hist, bins, active);
    bool taken[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) taken[i] = active[i] && bins[i] - lo <= width;
    append4(keys, taken, window, capacity, &s.nwin);
  }
  return w;
}

// A block's radix select after its first pass, whose histogram is complete: the first digit,
// then the later ones from the keys src[0, n) (read 16 bytes at a time with vec), those sharing
// the first digit set aside in s.cand on the way when they fit. With a window that holds every
// key of the first digit's bin (window_pass), the later passes read the window instead. It
// stops after a digit whose bin is targeted whole.
__device__ __forceinline__ TdThreshold select_from_first_digit(int64_t k, const uint32_t* src,
                                                               int n, bool vec, const Window& w,
                                                               const uint32_t* window,
                                                               unsigned capacity,
                                                               SelectState& s) {
  find_digit(static_cast<unsigned>(k), s);
  uint32_t prefix = s.digit << td_digit_shift(0);
  uint32_t pmask = td_digit_mask(0);
  unsigned remaining = s.remaining;
  const unsigned first_count = s.count;  // keys sharing the first digit
  // Every key left in the bin targeted: the later digits need no pass (see register_select).
  if (remaining == first_count)
    return TdThreshold{prefix | td_digit_mask(1) | td_digit_mask(2), 0, false};
  // Block-uniform, as s.digit and s.nwin are after find_digit's barriers.
  const bool windowed = w.taken && s.digit - w.lo <= w.width && s.nwin <= capacity;
  if (windowed) {
    src = window;
    n = static_cast<int>(s.nwin);
    vec = true;
  }
  const bool collect = !windowed && first_count <= kCandidates;
  if (collect) histogram_pass<1, false, true>(src, n, vec, prefix, pmask, nullptr, s);
  else histogram_pass<1, false, false>(src, n, vec, prefix, pmask, nullptr, s);
  find_digit(remaining, s);
  prefix |= s.digit << td_digit_shift(1);
  pmask |= td_digit_mask(1);
  remaining = s.remaining;
  if (remaining == s.count) return TdThreshold{prefix | td_digit_mask(2), 0, false};
  if (collect)
    histogram_pass<2, false, false>(s.cand, static_cast<int>(first_count), true, prefix, pmask,
                                    nullptr, s);
  else
    histogram_pass<2, false, false>(src, n, vec, prefix, pmask, nullptr, s);
  find_digit(remaining, s);
  const uint32_t T = prefix | (s.digit << td_digit_shift(2));
  return TdThreshold{T, s.remaining, s.remaining < s.count};
}

// Radix select of the k-th smallest key (0 < k < n) of one row by a whole block; the histogram
// is zero on entry and on return. With `staged`, the first pass also copies the row there and
// the later passes read it from there.
// Not inlined: block_row then keeps its 64 registers without spilling.
__device__ __noinline__ TdThreshold block_select(const uint32_t* row, int n, int64_t k,
                                                 bool aligned, uint32_t* staged, SelectState& s) {
  if (staged != nullptr) histogram_pass<0, true, false>(row, n, aligned, 0, 0, staged, s);
  else histogram_pass<0, false, false>(row, n, aligned, 0, 0, nullptr, s);
  const uint32_t* src = staged != nullptr ? staged : row;
  return select_from_first_digit(k, src, n, staged != nullptr || aligned, Window{}, nullptr, 0,
                                 s);
}

// The same for a row too long to stage, whose first pass sets aside the keys near the k-th key's
// first digit in `window`, room for `capacity` keys (window_pass). Only the kernels of launches
// that hold such rows have it (kWindowRows): compiled into every kernel of block rows, it took
// 4096 x 4096's (the register select's) to 64 registers and spills in some builds (nvcc -Xptxas
// -v, sm_90: with -DTDROP_TD_SPARE_BIN=1), where that kernel has 55 without it.
__device__ __noinline__ TdThreshold window_select(const uint32_t* row, int n, int64_t k,
                                                  bool aligned, uint32_t* window,
                                                  unsigned capacity, SelectState& s) {
  const Window w = window_pass(row, n, k, aligned, window, capacity, s);
  return select_from_first_digit(k, row, n, aligned, w, window, capacity, s);
}

// radix_select_held's histogram on the device: the block's shared one (hist_add4), the digit
// found by find_digit.
struct BlockHistogram {
  static constexpr int kSpan = kBlockSpan;
  SelectState& s;
  __device__ void add4(const unsigned (&bins)[4], const bool (&active)[4]) {
    hist_add4(s.hist, bins, active);
  }
  __device__ TdDigit find(unsigned remaining, unsigned bin0_excess) {
    find_digit(remaining, s, bin0_excess);
    return TdDigit{s.digit, s.remaining, s.count};
  }
};

// The same radix select for a row of at most G tiles of 1024 entries, its keys held in
// registers: thread t holds entries 1024 g + 4 t + i of tile g, loaded once (and staged for
// the final pass), and the three passes walk registers instead of re-reading the row. No
// per-entry bounds test and no candidate list: entries past n are loaded as key 0, and while
// the prefix is 0 they are taken off bin 0 (find_digit's bin0_excess). Each pass costs a few
// instructions per key where the shared select pays for 64-bit bounds tests, loads and the
// candidate append (on an H200 the 4096 x 4096 launch was bound by instruction issue). The
// passes are radix_select_held (targeted_dropout_radix_select.h, which a CPU test runs too),
// whose block-uniform early exit skips the last pass for most rows.
template <int G>
__device__ __noinline__ TdThreshold register_select(const uint32_t* row, int n, int64_t k,
                                                    bool aligned, uint32_t* staged,
                                                    SelectState& s) {
  const int first = kEntries * threadIdx.x;
  uint4 b[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const int c0 = kBlockSpan * g + first;
    b[g] = load4(row, c0, n, aligned);
    if (staged != nullptr && c0 < n) *reinterpret_cast<uint4*>(staged + c0) = b[g];
    b[g] = make_uint4(magnitude_key(b[g].x), magnitude_key(b[g].y), magnitude_key(b[g].z),
                      magnitude_key(b[g].w));
  }
  BlockHistogram hist{s};
  return radix_select_held<G>(b, n, k, hist);
}

static_assert(kTdRegisterRowMax == 4 * kBlockSpan, "register_select_any goes up to 4 tiles");
__device__ TdThreshold register_select_any(int tiles, const uint32_t* row, int n, int64_t k,
                                           bool aligned, uint32_t* staged, SelectState& s) {
  switch (tiles) {
    case 1: return register_select<1>(row, n, k, aligned, staged, s);
    case 2: return register_select<2>(row, n, k, aligned, staged, s);
    case 3: return register_select<3>(row, n, k, aligned, staged, s);
    default: return register_select<4>(row, n, k, aligned, staged, s);
  }
}

// A whole block on one row. The histogram is zero on entry and on return. kStaged: the row is
// already in s_row (td_weight_prefetch_kernel copied it there).
template <bool kStaged = false, bool kWindow = false>
__device__ void block_row(const DevTask& t, int64_t r, const PhiloxKeys& philox,
                          int64_t smem_floats, uint32_t* s_row, SelectState& sel, bool* bad) {
  const int warp = threadIdx.x >> 5;
  const int n = static_cast<int>(t.n);  // at most kTdFusedRowMax
  const int64_t k = t.k;
  const uint32_t* row = kStaged ? s_row : reinterpret_cast<const uint32_t*>(t.w + r * n);
  const bool aligned = kStaged || (n % 4 == 0 && (reinterpret_cast<uintptr_t>(t.w) & 15) == 0);
  // A row with something to select is staged on chip when it fits: the select's first pass
  // copies it there, the later passes and the final pass read it there. Longer rows, and rows
  // read only once (k = 0 or n), come from global memory.
  const bool select = k > 0 && k < n;
  uint32_t* staged = !kStaged && select && n <= smem_floats ? s_row : nullptr;
  // A longer row sets aside the keys near its threshold there instead (window_select): a launch
  // of a kernel with windows has room for kWindowFloats at least (plan_fused_launch).
  const bool window = kWindow && select && staged == nullptr;
  TdThreshold th;
  if (select) {
    if (t.block_tiles > 0)
      th = register_select_any(t.block_tiles, row, n, k, aligned, staged, sel);
    else if (window)
      th = window_select(row, n, k, aligned, s_row, static_cast<unsigned>(smem_floats), sel);
    else
      th = block_select(row, n, k, aligned, staged, sel);
  }
  const TdCut cut = td_cut(k, n, th);
  // s_row is 16-byte aligned and padded to 4 entries: a staged row is read 16 bytes at a time.
  const FinalRow fr =
      final_row(t, r, n, staged != nullptr ? staged : row, staged != nullptr || aligned);
  const auto scan = [&sel](unsigned v, unsigned* total) {
    return block_inclusive_scan(v, sel.scan_scratch, total) - v;
  };
  final_pass<kBlockSpan, true>(t, fr, kEntries * threadIdx.x, 32 * kEntries * warp, cut, philox,
                               scan, bad);
  __syncthreads();  // s_row and sel are reused by the next row
}

// The threads that share a short row: one warp (WarpRow), or a group of four warps (GroupRow;
// two rows per block). Thread `index()` of the row holds entries kSpan * g + 4 * index() + i of
// chunk g, so each warp holds 128 consecutive entries of every chunk; sum, or_and and
// exclusive_scan reduce over the row's threads. GroupRow reduces each warp first, then the four
// warp totals through shared memory behind a barrier of the group's 128 threads (named barrier
// 1 or 2; 0 is __syncthreads). Its two slot sets alternate, so one barrier per reduction keeps
// a warp from overwriting totals another is still reading: a slot is written again only after
// the next reduction's barrier, which every thread reaches after its reads.
struct WarpRow {
  static constexpr int kSpan = 32 * kEntries;
  __device__ int index() const { return threadIdx.x & 31; }
  __device__ int warp() const { return 0; }
  __device__ unsigned sum(unsigned v) { return warp_sum(v); }
  __device__ void or_and(unsigned* any, unsigned* all) { warp_or_and(any, all); }
  // Sum of v over the row's threads before this one; *total gets the sum over all of them.
  __device__ unsigned exclusive_scan(unsigned v, unsigned* total) {
    const unsigned incl = warp_inclusive_scan(v);
    *total = __shfl_sync(0xffffffffu, incl, 31);
    return incl - v;
  }
};

constexpr int kGroupWarps = 4;
constexpr int kGroupThreads = 32 * kGroupWarps;
constexpr int kGroupsPerBlock = kThreads / kGroupThreads;

struct GroupShared {
  __align__(16) unsigned slot[2][kGroupWarps];
  __align__(16) unsigned any[kGroupWarps];
  __align__(16) unsigned all[kGroupWarps];
};

struct GroupRow {
  static constexpr int kSpan = kGroupThreads * kEntries;
  GroupShared* s;
  int phase = 0;  // which slot set the next reduction uses
  __device__ int index() const { return threadIdx.x & (kGroupThreads - 1); }
  __device__ int warp() const { return index() >> 5; }
  // Barrier 1 for the block's first group, 2 for its second, as immediates: with the id in a
  // register, ptxas reserves all 16 named barriers for the kernel ("used 16 barriers", -Xptxas
  // -v), a resource the SM shares among its blocks; with immediates, 3. A warp lies wholly in
  // one group, so the branch does not split a warp.
  __device__ void sync() const {
    static_assert(kGroupsPerBlock == 2, "one named barrier per group");
    if (threadIdx.x < kGroupThreads) named_barrier<1, kGroupThreads>();
    else named_barrier<2, kGroupThreads>();
  }
  // The four warps' totals (each the same in every lane of its warp).
  __device__ uint4 gather(unsigned warp_total) {
    unsigned* slot = s->slot[phase++ & 1];
    if ((threadIdx.x & 31) == 0) slot[warp()] = warp_total;
    sync();
    return *reinterpret_cast<const uint4*>(slot);
  }
  __device__ unsigned sum(unsigned v) {
    const uint4 w = gather(warp_sum(v));
    return w.x + w.y + w.z + w.w;
  }
  __device__ void or_and(unsigned* any, unsigned* all) {
    warp_or_and(any, all);
    if ((threadIdx.x & 31) == 0) {
      s->any[warp()] = *any;
      s->all[warp()] = *all;
    }
    sync();
    const uint4 o = *reinterpret_cast<const uint4*>(s->any);
    const uint4 a = *reinterpret_cast<const uint4*>(s->all);
    *any = o.x | o.y | o.z | o.w;
    *all = a.x & a.y & a.z & a.w;
  }
  __device__ unsigned exclusive_scan(unsigned v, unsigned* total) {
    const unsigned incl = warp_inclusive_scan(v);
    const uint4 w = gather(__shfl_sync(0xffffffffu, incl, 31));
    const int me = warp();
    *total = w.x + w.y + w.z + w.w;
    return (me > 0 ? w.x : 0u) + (me > 1 ? w.y : 0u) + (me > 2 ? w.z : 0u) + incl - v;
  }
};

// Row r of t (n <= Row::kSpan * G) on `row`'s threads: load, select, then block_row's final
// pass with the row's own tie scan. No block barrier: the block's other threads are on other
// rows. The final pass reads the row again (from L1, where the first read left it) rather than
// keeping it in registers next to the Philox state: that would spill. kFullSteps: see
// final_pass. Inlined only where kFullSteps (the warp-only instantiation, through warp_row); the
// other instantiations call it (short_row), as inlining there spilled.
template <int G, class Row, bool kFullSteps>
__device__ __forceinline__ void short_row_body(const DevTask& t, int64_t r,
                                               const PhiloxKeys& philox, Row row, bool* bad) {
  const int first = kEntries * row.index();
  const int n = static_cast<int>(t.n);  // at most kTdWarpRowMax
  const int64_t k = t.k;
  const uint32_t* src = reinterpret_cast<const uint32_t*>(t.w + r * n);
  const bool aligned = n % 4 == 0 && (reinterpret_cast<uintptr_t>(t.w) & 15) == 0;
  TdThreshold th;
  if (k > 0 && k < n) {  // row-uniform
    uint4 b[G];
#pragma unroll
    for (int g = 0; g < G; ++g) b[g] = load4(src, Row::kSpan * g + first, n, aligned);
    th = short_select<G>(b, n, k, row);
  }
  const TdCut cut = td_cut(k, n, th);
  const FinalRow fr = final_row(t, r, n, src, aligned);
  const auto scan = [&row](unsigned v, unsigned* total) { return row.exclusive_scan(v, total); };
  final_pass<Row::kSpan, kFullSteps>(t, fr, first, 32 * kEntries * row.warp(), cut, philox, scan,
                                     bad);
}
template <int G, class Row, bool kFullSteps = false>
__device__ __noinline__ void short_row(const DevTask& t, int64_t r, const PhiloxKeys& philox,
                                       Row row, bool* bad) {
  short_row_body<G, Row, kFullSteps>(t, r, philox, row, bad);
}
// Inlined, the row reads the kernel's parameters (the Philox keys, the task) as constants,
// where a call reads them through generic pointers every step.
template <int G, bool kFullSteps>
__device__ __forceinline__ void warp_row(const DevTask& t, int64_t r, const PhiloxKeys& philox,
                                         bool* bad) {
  if constexpr (kFullSteps) short_row_body<G, WarpRow, true>(t, r, philox, WarpRow{}, bad);
  else short_row<G, WarpRow, false>(t, r, philox, WarpRow{}, bad);
}

// A warp row of t: warp_groups chunks of 128 entries.
template <bool kFullSteps>
__device__ void warp_row_any(const DevTask& t, int64_t r, const PhiloxKeys& philox, bool* bad) {
  switch (t.warp_groups) {
    case 1: return warp_row<1, kFullSteps>(t, r, philox, bad);
    case 2: return warp_row<2, kFullSteps>(t, r, philox, bad);
    case 3: return warp_row<3, kFullSteps>(t, r, philox, bad);
    case 4: return warp_row<4, kFullSteps>(t, r, philox, bad);
    case 5: return warp_row<5, kFullSteps>(t, r, philox, bad);
    case 6: return warp_row<6, kFullSteps>(t, r, philox, bad);
    case 7: return warp_row<7, kFullSteps>(t, r, philox, bad);
    default: return warp_row<8, kFullSteps>(t, r, philox, bad);
  }
}

static_assert(kTdWarpRowMax <= 2 * GroupRow::kSpan, "a group row is at most 2 chunks");

// A group row of t: -warp_groups chunks of 512 entries. All 128 threads of the group call it.
__device__ void group_row_any(const DevTask& t, int64_t r, const PhiloxKeys& philox,
                              GroupShared* s, bool* bad) {
  const GroupRow row{s};
  if (t.warp_groups == -1) short_row<1>(t, r, philox, row, bad);
  else short_row<2>(t, r, philox, row, bad);
}

// Which row paths a launch holds. A launch of only short rows (ResNet-32's) or only long ones
// (4096 x 4096) runs an instantiation without the other path: the block path then compiles as
// it did before the warp path existed (64 registers, no spills; the kernel holding both paths
// spills and keeps a 120-byte stack), and the warp path needs no shared memory.
// Group rows (TdRows::Group) come alone or with block rows, never with warp rows.
// kWindowRows, added to a path of block rows, compiles window_select in for block rows too long
// to stage (and leaves it out of the other instantiations, whose registers it would take).
enum RowPaths : int {
  kWarpRowsOnly = 1,
  kBlockRowsOnly = 2,
  kBothRowPaths = 3,
  kGroupRowsOnly = 4,
  kGroupAndBlockRows = 6,
  kWindowRows = 8
};

// Blocks of 256 threads per SM that the launch bounds ask for; registers per thread follow (4
// blocks: 64, 3: 80). Four fit the block path without spilling. The warp path does not: every
// warp row's short_row<G> spilled there (56 to 144 bytes, `nvcc -Xptxas -v`, sm_90) and
// ResNet-32's launch made 112,942 local-memory requests (ncu), so a launch of only warp rows
// asks for three (no spills, no stack: its rows are inlined). A launch of only group rows asks
// for four, so that ResNet-32's 560 blocks of group rows nearly fit one wave (528 at four per
// SM, 396 at three), spilling 8 bytes in its rows. All three can be set when compiling
// (-DTDROP_TD_MIN_BLOCKS_...=N in CMAKE_CUDA_FLAGS), so that `BENCH_VARIANTS` of
// apps/gpu-bundle.sh builds other choices to time beside these.
#ifndef TDROP_TD_MIN_BLOCKS_BLOCK_ROWS
#define TDROP_TD_MIN_BLOCKS_BLOCK_ROWS 4
#endif
#ifndef TDROP_TD_MIN_BLOCKS_WARP_ROWS
#define TDROP_TD_MIN_BLOCKS_WARP_ROWS 3
#endif
#ifndef TDROP_TD_MIN_BLOCKS_GROUP_ROWS
#define TDROP_TD_MIN_BLOCKS_GROUP_ROWS 4
#endif
constexpr int min_blocks_per_sm(int paths) {
  return paths == kWarpRowsOnly    ? TDROP_TD_MIN_BLOCKS_WARP_ROWS
         : paths == kGroupRowsOnly ? TDROP_TD_MIN_BLOCKS_GROUP_ROWS
                                   : TDROP_TD_MIN_BLOCKS_BLOCK_ROWS;
}
// The weight kernel's static shared state, declared in functions rather than in the kernel
// template: the host emulation (tests/cuda_emulator.h) fills shared memory with garbage before
// each block, and the host compiler leaves a template's statics out of the section it fills.
__device__ __forceinline__ SelectState& select_state() {
  __shared__ SelectState s;
  return s;
}
__device__ __forceinline__ GroupShared* group_shared() {
  __shared__ GroupShared g[kGroupsPerBlock];
  return g;
}

// Zeroes the select's histogram, 16 bytes a store: a block that takes one row (4096 x 4096's)
// zeroes its 8 KB once, in 2 stores a thread where the loop of scalar stores took about 45
// instructions. Ends with a barrier.
__device__ __forceinline__ void clear_histogram(SelectState& sel) {
  static_assert(kTdRadixBins % (4 * kThreads) == 0, "whole 16-byte stores per thread");
#pragma unroll
  for (int j = 0; j < kTdRadixBins / (4 * kThreads); ++j)
    reinterpret_cast<uint4*>(sel.hist)[j * kThreads + threadIdx.x] = make_uint4(0u, 0u, 0u, 0u);
  __syncthreads();
}

template <int kPaths>
__global__ void __launch_bounds__(kThreads, min_blocks_per_sm(kPaths))
    td_weight_fused_kernel(const __grid_constant__ TaskTable table,
                           const __grid_constant__ PhiloxKeys philox,
                           int64_t smem_floats, TdFlags nonfinite) {
  uint32_t* const s_row = dynamic_shared<uint32_t>();
  SelectState& sel = select_state();
  GroupShared* const groups = group_shared();
  if constexpr ((kPaths & kBlockRowsOnly) != 0) clear_histogram(sel);
  for (int64_t g = blockIdx.x; g < table.total; g += gridDim.x) {
    const DevTask& t = table.t[find_task(table, g)];
    bool bad = false;
    // Block-uniform: every warp (group) of a warp-row (group-row) item takes one row of it.
    if (t.warp_groups > 0) {
      if constexpr ((kPaths & kWarpRowsOnly) != 0) {
        const int64_t r = (g - t.begin) * kWarps + (threadIdx.x >> 5);
        if (r < t.rows) warp_row_any<kPaths == kWarpRowsOnly>(t, r, philox, &bad);
      }
    } else if (t.warp_groups < 0) {
      if constexpr ((kPaths & kGroupRowsOnly) != 0) {
        const int group = static_cast<int>(threadIdx.x) / kGroupThreads;
        const int64_t r = (g - t.begin) * kGroupsPerBlock + group;
        if (r < t.rows) group_row_any(t, r, philox, &groups[group], &bad);
      }
    } else {
      if constexpr ((kPaths & kBlockRowsOnly) != 0)
        block_row<false, (kPaths & kWindowRows) != 0>(t, g - t.begin, philox, smem_floats, s_row,
                                                      sel, &bad);
    }
    if (bad) atomicExch(&nonfinite.p[t.flag], nonfinite.mark);
  }
}

// Starts the asynchronous copy of row r of t to `buf`.
__device__ __forceinline__ void prefetch_row(const DevTask& t, int64_t r, uint32_t* buf) {
  const int n = static_cast<int>(t.n);
  const uint32_t* row = reinterpret_cast<const uint32_t*>(t.w + r * n);
  for (int c0 = kEntries * threadIdx.x; c0 < n; c0 += kBlockSpan) copy16_async(buf + c0, row + c0);
}

// Block rows with the next row on its way (TdBlockSelect::Prefetched, for launches whose rows
// all go to blocks, are at most kTdPrefetchRowMax entries long and are read 16 bytes at a time;
// the select, in registers or the shared one, reads the row's copy): the grid is what fits on the
// GPU at once, each block walks the rows gridDim.x apart, and while it selects and writes one
// row, the next is copied into its other half of shared memory (`buf_floats` floats each) by
// cp.async, so a block no longer waits for its row to arrive from memory between rows (in
// td_weight_fused_kernel a block's row is read when the block starts). Same bits as every
// other path.
__global__ void __launch_bounds__(kThreads, TDROP_TD_MIN_BLOCKS_BLOCK_ROWS)
    td_weight_prefetch_kernel(const __grid_constant__ TaskTable table,
                              const __grid_constant__ PhiloxKeys philox, int64_t buf_floats,
                              TdFlags nonfinite) {
  uint32_t* const bufs = dynamic_shared<uint32_t>();
  SelectState& sel = select_state();
  clear_histogram(sel);
  // Each row's task is looked up once, when its copy starts (its index carried to the row).
  int64_t g = blockIdx.x;
  int ti = g < table.total ? find_task(table, g) : -1;
  if (ti >= 0) prefetch_row(table.t[ti], g - table.t[ti].begin, bufs);
  copies_commit();
  for (int slot = 0; ti >= 0; g += gridDim.x, slot ^= 1) {
    // The other half was last read by the previous row, which block_row ends with a barrier.
    const int64_t g_next = g + gridDim.x;
    const int next = g_next < table.total ? find_task(table, g_next) : -1;
    if (next >= 0)
      prefetch_row(table.t[next], g_next - table.t[next].begin, bufs + (slot ^ 1) * buf_floats);
    copies_commit();  // an empty group on the last row, so that one wait fits every row
    copies_wait<1>();  // this row's copies (all but the newest group) have landed
    __syncthreads();   // ... every thread's
    const DevTask& t = table.t[ti];
    bool bad = false;
    block_row<true>(t, g - t.begin, philox, buf_floats, bufs + slot * buf_floats, sel, &bad);
    if (bad) atomicExch(&nonfinite.p[t.flag], nonfinite.mark);
    ti = next;
  }
  copies_wait<0>();
}

}  // namespace
}  // namespace tdrop
