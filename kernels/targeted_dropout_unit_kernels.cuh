// Unit-mode targeted dropout on the device: rows are ranked by their L2 norm, so every row's
// norm is needed before any row can be ranked, and a model's unit-mode layers take three grouped
// launches: norms (one block per row), selection (one block per layer, radix select over the
// 64-bit norm keys), apply (one block per row). Planned by targeted_dropout_fused_plan.cuh.
#pragma once
#include <cstdint>

#include "kernels/targeted_dropout_device.cuh"
#include "kernels/targeted_dropout_task_table.cuh"

namespace tdrop {

using namespace td_device;

namespace {

// Shared state of a unit-mode selection (8-bit digits over 64-bit norm keys, bin = thread).
struct UnitSelectState {
  unsigned hist[kThreads];
  unsigned scan_scratch[kWarps];
  unsigned digit, remaining, count;
};

// Unit mode, launch 1: canonical squared norm of every row of every unit task.
__global__ void __launch_bounds__(kThreads)
    td_unit_norms_kernel(const __grid_constant__ TaskTable table, double* norms,
                         TdFlags nonfinite) {
  __shared__ double lanes[kThreads];
  __shared__ int bad;
  for (int64_t g = blockIdx.x; g < table.total; g += gridDim.x) {
    const DevTask& t = table.t[find_task(table, g)];
    if (threadIdx.x == 0) bad = 0;
    __syncthreads();
    const double v = row_norm_sq(t.w + (g - t.begin) * t.n, t.n, lanes, &bad, 1);
    if (threadIdx.x == 0) {
      norms[g] = v;
      if (bad) nonfinite.p[t.flag] = nonfinite.mark;
    }
  }
}

// Unit mode, launch 2: one block per task ranks its rows by norm (radix select on the 64-bit
// keys, up to 8 passes of 8 bits, ties by row index) and decides each row: 0 keep, 1 draw per
// entry, 2 drop.
__global__ void __launch_bounds__(kThreads)
    td_unit_select_kernel(const __grid_constant__ TaskTable table, uint64_t seed,
                          const double* norms, uint8_t* row_state) {
  __shared__ UnitSelectState s;
  for (int ti = blockIdx.x; ti < table.count; ti += gridDim.x) {
    const DevTask& t = table.t[ti];
    const unsigned long long* keys =
        reinterpret_cast<const unsigned long long*>(norms + t.begin);
    const int64_t R = t.rows, k = t.k;
    unsigned long long T = 0, pmask = 0;
    unsigned remaining = static_cast<unsigned>(k), ties = 0;
    if (k > 0 && k < R) {
#pragma unroll 1
      for (int shift = 56; shift >= 0; shift -= 8) {
        s.hist[threadIdx.x] = 0;
        __syncthreads();
        for (int64_t j = threadIdx.x; j < R; j += kThreads)
          if ((keys[j] & pmask) == T) atomicAdd(&s.hist[(keys[j] >> shift) & 255u], 1u);
        __syncthreads();
        const unsigned c = s.hist[threadIdx.x];
        unsigned total;
        const unsigned incl = block_inclusive_scan(c, s.scan_scratch, &total);
        if (incl - c < remaining && remaining <= incl) {
          s.digit = threadIdx.x;
          s.remaining = remaining - (incl - c);
          s.count = c;
        }
        __syncthreads();
        T |= static_cast<unsigned long long>(s.digit) << shift;
        pmask |= 255ull << shift;
        remaining = s.remaining;
        ties = s.count;
        __syncthreads();
        // Every row left in the bin targeted: T becomes the bin's largest key and the rows up
        // to it are exactly the k smallest (remaining == ties: no tie is ranked).
        if (remaining == ties) {  // block-uniform
          T |= ~pmask;
          break;
        }
      }
    }
    const bool rank_ties = k > 0 && k < R && remaining < ties;
    unsigned tie_base = 0;
    for (int64_t base = 0; base < R; base += kThreads) {
      const int64_t r = base + threadIdx.x;
      const bool valid = r < R;
      const unsigned long long key = valid ? keys[r] : 0ull;
      bool targeted;
      if (k == 0) targeted = false;
      else if (k == R) targeted = valid;
      else {
        const bool tie = valid && key == T;
        targeted = valid && (key < T || (tie && !rank_ties));
        if (rank_ties) {
          unsigned total;
          const unsigned rank =
              block_inclusive_scan(tie ? 1u : 0u, s.scan_scratch, &total) - (tie ? 1u : 0u);
          targeted = targeted || (tie && tie_base + rank < remaining);
          tie_base += total;
        }
      }
      if (valid) {
        uint8_t state = 0;
        if (targeted)
          state = t.per_weight_draws
                      ? 1
                      : (td_draw(seed, t.stream, static_cast<uint64_t>(r), t.drop_threshold) ? 2
                                                                                             : 0);
        row_state[t.begin + r] = state;
      }
    }
    __syncthreads();
  }
}

// Unit mode, launch 3: write W' and the mask of every row from its state.
__global__ void __launch_bounds__(kThreads)
    td_unit_apply_kernel(const __grid_constant__ TaskTable table, uint64_t seed,
                         const uint8_t* row_state) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t g = blockIdx.x; g < table.total; g += gridDim.x) {
    const DevTask& t = table.t[find_task(table, g)];
    const int64_t r = g - t.begin, n = t.n;
    const uint8_t state = row_state[g];
    const uint32_t* row = reinterpret_cast<const uint32_t*>(t.w + r * n);
    float* out = t.w_out + r * n;
    uint32_t* mask = t.mask + r * mask_words_per_row(n);
    for (int64_t base = 0; base < n; base += kThreads) {
      const int64_t c = base + threadIdx.x;
      const bool valid = c < n;
      bool dropped = state == 2;
      if (state == 1 && valid)
        dropped = td_draw(seed, t.stream, static_cast<uint64_t>(r * n + c), t.drop_threshold);
      if (valid) out[c] = dropped ? 0.0f : __uint_as_float(row[c]);
      const unsigned word = __ballot_sync(0xffffffffu, valid && !dropped);
      const int64_t first = base + warp * 32;
      if (lane == 0 && first < n) mask[first / 32] = word;
    }
  }
}

}  // namespace
}  // namespace tdrop
