// Fused targeted dropout: one pass over W per row, all targeted layers of a model in one launch.
//
// Weight mode (td_weight_fused_kernel): a block owns a row. The row is staged in shared memory
// (when it fits; longer rows are re-read from global memory, which L2 mostly serves), the k-th
// smallest magnitude key is found by a 4-pass radix select on the 31-bit keys (8 bits a pass,
// histogram in shared memory), and one final pass draws Philox numbers for targeted entries and
// writes W' plus the 1-bit mask (one warp ballot = one mask word). Ties at the threshold are
// resolved by column order with a block scan, only when the threshold value is shared by more
// entries than remain to be targeted (rare with real weights; common after pruning).
//
// Unit mode needs every row's norm before any row can be ranked, so it runs as three grouped
// launches: norms (one block per row), selection (one block per layer, radix select over the
// 64-bit norm keys), apply (one block per row).
#include <algorithm>

#include "core/cuda_check.h"
#include "kernels/targeted_dropout_device.cuh"

namespace tdrop {

using namespace td_device;

namespace {

// One table entry per task, passed by value as a kernel parameter (no per-step H2D copy).
struct DevTask {
  const float* w;
  float* w_out;
  uint32_t* mask;
  int64_t rows, n, k;
  uint64_t stream;
  int64_t row_begin;  // first row of this task in the launch's global row numbering
  uint32_t drop_threshold;
  int unit, per_weight_draws;
};

constexpr int kMaxTasks = 96;  // 96 * 64 B: well inside the 32 KB kernel-parameter limit
struct TaskTable {
  DevTask t[kMaxTasks];
  int count;
  int64_t total_rows;
};

// Index of the task owning global row g (largest i with row_begin <= g).
__device__ __forceinline__ int find_task(const TaskTable& table, int64_t g) {
  int lo = 0, hi = table.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (table.t[mid].row_begin <= g) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Shared state of a block's radix select.
struct SelectState {
  unsigned hist[256];
  unsigned scan_scratch[kWarps];
  unsigned digit, remaining, count;
};

// Finds the k-th smallest (1-based, 0 < k < n) 31-bit magnitude key among keys[0..n).
// Returns the key T; *m = how many entries equal to T are targeted; *ties = entries equal to T.
__device__ uint32_t radix_select_row(const uint32_t* bits, int64_t n, int64_t k, SelectState& s,
                                     unsigned* m, unsigned* ties) {
  uint32_t prefix = 0, pmask = 0;
  unsigned remaining = static_cast<unsigned>(k);
#pragma unroll 1
  for (int shift = 24; shift >= 0; shift -= 8) {
    s.hist[threadIdx.x] = 0;
    __syncthreads();
    for (int64_t j = threadIdx.x; j < n; j += kThreads) {
      const uint32_t key = magnitude_key(bits[j]);
      if ((key & pmask) == prefix) atomicAdd(&s.hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    const unsigned c = s.hist[threadIdx.x];
    unsigned total;
    const unsigned incl = block_inclusive_scan(c, s.scan_scratch, &total);
    const unsigned excl = incl - c;
    if (excl < remaining && remaining <= incl) {  // exactly one thread: the digit holding rank k
      s.digit = threadIdx.x;
      s.remaining = remaining - excl;
      s.count = c;
    }
    __syncthreads();
    prefix |= s.digit << shift;
    pmask |= 255u << shift;
    remaining = s.remaining;
    *ties = s.count;
    __syncthreads();
  }
  *m = remaining;
  return prefix;
}

__global__ void __launch_bounds__(kThreads) td_weight_fused_kernel(TaskTable table, uint64_t seed,
                                                                   int64_t smem_floats,
                                                                   int* nonfinite) {
  extern __shared__ uint32_t s_row[];
  __shared__ SelectState sel;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t g = blockIdx.x; g < table.total_rows; g += gridDim.x) {
    const int ti = find_task(table, g);
    const DevTask& t = table.t[ti];
    if (t.unit) continue;
    const int64_t r = g - t.row_begin, n = t.n, k = t.k;
    const uint32_t* row = reinterpret_cast<const uint32_t*>(t.w + r * n);
    // Stage the row on chip when it fits; the select passes then read shared memory.
    const uint32_t* src = row;
    if (n <= smem_floats && k > 0 && k < n) {
      for (int64_t j = threadIdx.x; j < n; j += kThreads) s_row[j] = row[j];
      __syncthreads();
      src = s_row;
    }
    uint32_t T = 0;
    unsigned m = 0, ties = 0;
    if (k > 0 && k < n) T = radix_select_row(src, n, k, sel, &m, &ties);
    const bool rank_ties = k > 0 && k < n && m < ties;
    unsigned tie_base = 0;  // ties at the threshold in earlier iterations
    bool bad = false;
    float* out = t.w_out + r * n;
    uint32_t* mask = t.mask + r * mask_words_per_row(n);
    const uint64_t base_index = static_cast<uint64_t>(r) * static_cast<uint64_t>(n);
    for (int64_t base = 0; base < n; base += kThreads) {  // uniform trip count: ballots need it
      const int64_t c = base + threadIdx.x;
      const bool valid = c < n;
      const uint32_t b = valid ? src[c] : 0u;
      const uint32_t key = magnitude_key(b);
      bad |= valid && key >= kNonFiniteKey;
      bool targeted;
      if (k == 0) {
        targeted = false;
      } else if (k == n) {
        targeted = valid;
      } else {
        const bool tie = valid && key == T;
        targeted = valid && (key < T || (tie && !rank_ties));
        if (rank_ties) {  // block-uniform branch
          unsigned total;
          const unsigned rank = block_inclusive_scan(tie ? 1u : 0u, sel.scan_scratch, &total) -
                                (tie ? 1u : 0u);
          targeted = targeted || (tie && tie_base + rank < m);
          tie_base += total;
        }
      }
      const bool dropped =
          targeted && td_draw(seed, t.stream, base_index + static_cast<uint64_t>(c),
                              t.drop_threshold);
      if (valid) out[c] = dropped ? 0.0f : __uint_as_float(b);
      const unsigned word = __ballot_sync(0xffffffffu, valid && !dropped);
      const int64_t first = base + warp * 32;
      if (lane == 0 && first < n) mask[first / 32] = word;
    }
    if (bad) atomicExch(&nonfinite[ti], 1);
    __syncthreads();  // s_row and sel are reused by the next row
  }
}

// Unit mode, launch 1: canonical squared norm of every row of every unit task.
__global__ void __launch_bounds__(kThreads) td_unit_norms_kernel(TaskTable table, double* norms,
                                                                 int* nonfinite) {
  __shared__ double lanes[kThreads];
  __shared__ int bad;
  for (int64_t g = blockIdx.x; g < table.total_rows; g += gridDim.x) {
    const int ti = find_task(table, g);
    const DevTask& t = table.t[ti];
    if (!t.unit) continue;
    if (threadIdx.x == 0) bad = 0;
    __syncthreads();
    const double v = row_norm_sq(t.w + (g - t.row_begin) * t.n, t.n, lanes, &bad);
    if (threadIdx.x == 0) {
      norms[g] = v;
      if (bad) nonfinite[ti] = 1;
    }
  }
}

// Unit mode, launch 2: one block per task ranks its rows by norm (8-pass radix select on the
// 64-bit keys, ties by row index) and decides each row: 0 keep, 1 draw per entry, 2 drop.
__global__ void __launch_bounds__(kThreads) td_unit_select_kernel(TaskTable table, uint64_t seed,
                                                                  const double* norms,
                                                                  uint8_t* row_state) {
  __shared__ SelectState s;
  for (int ti = blockIdx.x; ti < table.count; ti += gridDim.x) {
    const DevTask& t = table.t[ti];
    if (!t.unit) continue;
    const unsigned long long* keys =
        reinterpret_cast<const unsigned long long*>(norms + t.row_begin);
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
        row_state[t.row_begin + r] = state;
      }
    }
    __syncthreads();
  }
}

// Unit mode, launch 3: write W' and the mask of every row from its state.
__global__ void __launch_bounds__(kThreads) td_unit_apply_kernel(TaskTable table, uint64_t seed,
                                                                 const uint8_t* row_state) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t g = blockIdx.x; g < table.total_rows; g += gridDim.x) {
    const DevTask& t = table.t[find_task(table, g)];
    if (!t.unit) continue;
    const int64_t r = g - t.row_begin, n = t.n;
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

unsigned grid_for_rows(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(rows, 1), 1 << 20));
}

// Largest row (in floats) staged in shared memory: what the device allows beyond the static
// shared state, capped so several blocks still fit on an SM.
int64_t smem_capacity_floats() {
  static const int64_t cap = [] {
    int dev = 0, optin = 0;
    TDROP_CUDA_CHECK(cudaGetDevice(&dev));
    TDROP_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    const int64_t bytes = std::min<int64_t>(optin - 4096, 64 * 1024);
    TDROP_CUDA_CHECK(cudaFuncSetAttribute(td_weight_fused_kernel,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(bytes)));
    return bytes / 4;
  }();
  return cap;
}

}  // namespace

void targeted_dropout_fused_cuda(const std::vector<TdTask>& tasks, uint64_t seed,
                                 TdCudaWorkspace& ws) {
  int* flags = ws.nonfinite_flags(tasks.size());
  const int64_t cap = smem_capacity_floats();
  for (size_t first = 0; first < tasks.size(); first += kMaxTasks) {
    const size_t count = std::min<size_t>(kMaxTasks, tasks.size() - first);
    TaskTable table{};
    table.count = static_cast<int>(count);
    bool any_weight = false, any_unit = false;
    int64_t max_n = 0;
    for (size_t i = 0; i < count; ++i) {
      const TdTask& s = tasks[first + i];
      TDROP_CHECK(s.n < (int64_t{1} << 31) && s.rows < (int64_t{1} << 31),
                  "targeted dropout: layer '", s.name, "' [", s.rows, ", ", s.n,
                  "] is too large for one launch");
      table.t[i] = DevTask{s.w, s.w_out, s.mask, s.rows, s.n, s.k, s.stream, table.total_rows,
                           s.drop_threshold, s.unit ? 1 : 0, s.per_weight_draws ? 1 : 0};
      table.total_rows += s.rows;
      any_weight |= !s.unit;
      any_unit |= s.unit;
      if (!s.unit && s.n <= cap) max_n = std::max(max_n, s.n);
    }
    if (table.total_rows == 0) continue;
    const unsigned grid = grid_for_rows(table.total_rows);
    if (any_weight) {
      td_weight_fused_kernel<<<grid, kThreads, static_cast<size_t>(max_n) * 4, cuda_stream()>>>(
          table, seed, max_n, flags + first);
      TDROP_LAUNCH_CHECK("td_weight_fused_kernel");
    }
    if (any_unit) {
      double* norms = static_cast<double*>(ws.buffer(0, table.total_rows * sizeof(double)));
      uint8_t* state = static_cast<uint8_t*>(ws.buffer(1, table.total_rows));
      td_unit_norms_kernel<<<grid, kThreads, 0, cuda_stream()>>>(table, norms, flags + first);
      TDROP_LAUNCH_CHECK("td_unit_norms_kernel");
      td_unit_select_kernel<<<table.count, kThreads, 0, cuda_stream()>>>(table, seed, norms, state);
      TDROP_LAUNCH_CHECK("td_unit_select_kernel");
      td_unit_apply_kernel<<<grid, kThreads, 0, cuda_stream()>>>(table, seed, state);
      TDROP_LAUNCH_CHECK("td_unit_apply_kernel");
    }
  }
}

}  // namespace tdrop
