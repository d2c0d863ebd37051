// Unfused targeted dropout: the pipeline a user of a general framework would write, one kernel
// and one tensor per step, kept honest (CUB's segmented radix sort, coalesced elementwise
// kernels). Per task, weight mode:
//   keys = |w| bits, cols = column index          (1 kernel: 4 B read, 8 B written per weight)
//   per-row stable sort of (key, col)              (CUB DeviceSegmentedRadixSort)
//   targeted[r, cols[r, j]] = 1 for j < k          (memset + scatter)
//   u = philox uniform bits                        (1 kernel)
//   keep = !(targeted & bernoulli(u))              (1 kernel)
//   w' = keep ? w : 0;  mask = pack(keep)          (2 kernels)
// Unit mode sorts the canonical row norms instead (CUB DeviceRadixSort) and targets rows.
// A stable sort of keys laid out in index order breaks ties by index, as the semantics require.
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include "core/cuda_check.h"
#include "kernels/targeted_dropout_device.cuh"

namespace tdrop {

using namespace td_device;

namespace {

__global__ void magnitude_keys_kernel(const float* w, int64_t rows, int64_t n, uint32_t* keys,
                                      int32_t* cols, int* nonfinite, int mark) {
  const int64_t total = rows * n;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const uint32_t key = magnitude_key(__float_as_uint(w[i]));
    if (key >= kNonFiniteKey) atomicExch(nonfinite, mark);
    keys[i] = key;
    cols[i] = static_cast<int32_t>(i % n);
  }
}

__global__ void segment_offsets_kernel(int64_t rows, int64_t n, int32_t* offsets) {
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r <= rows;
       r += (int64_t)gridDim.x * blockDim.x)
    offsets[r] = static_cast<int32_t>(r * n);
}

// Marks the first k sorted columns of each row as targeted.
__global__ void scatter_targeted_kernel(const int32_t* sorted_cols, int64_t rows, int64_t n,
                                        int64_t k, uint8_t* targeted) {
  const int64_t total = rows * k;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / k, j = i % k;
    targeted[r * n + sorted_cols[r * n + j]] = 1;
  }
}

__global__ void row_norms_kernel(const float* w, int64_t rows, int64_t n, double* norms,
                                 int32_t* row_ids, int* nonfinite, int mark) {
  __shared__ double lanes[kThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const double v = row_norm_sq(w + r * n, n, lanes, nonfinite, mark);
    if (threadIdx.x == 0) {
      norms[r] = v;
      row_ids[r] = static_cast<int32_t>(r);
    }
  }
}

// Unit mode: a targeted row marks all of its entries.
__global__ void scatter_targeted_rows_kernel(const int32_t* sorted_rows, int64_t k, int64_t n,
                                             uint8_t* targeted) {
  const int64_t total = k * n;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x)
    targeted[static_cast<int64_t>(sorted_rows[i / n]) * n + i % n] = 1;
}

// The "uniform random tensor": one 32-bit Philox draw per element (or per row).
__global__ void philox_bits_kernel(uint64_t seed, uint64_t stream, int64_t count, int64_t per,
                                   uint32_t* u) {
  const int64_t total = count;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x)
    u[i] = philox_u32(seed, stream, static_cast<uint64_t>(i / per));
}

__global__ void compare_kernel(const uint8_t* targeted, const uint32_t* u, uint32_t threshold,
                               int64_t total, uint8_t* keep) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x)
    keep[i] = !(targeted[i] && bernoulli_from_u32(u[i], threshold));
}

__global__ void select_kernel(const float* w, const uint8_t* keep, int64_t total, float* out) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = keep[i] ? w[i] : 0.0f;
}

__global__ void pack_mask_kernel(const uint8_t* keep, int64_t rows, int64_t n, uint32_t* mask) {
  const int64_t words = mask_words_per_row(n), total = rows * words;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / words, c0 = (i % words) * 32;
    uint32_t word = 0;
    for (int b = 0; b < 32 && c0 + b < n; ++b) word |= uint32_t{keep[r * n + c0 + b]} << b;
    mask[i] = word;
  }
}

enum Slot { kKeys = 2, kKeysSorted, kCols, kColsSorted, kOffsets, kTargeted, kUniform, kKeep,
            kCubTemp, kNorms, kNormsSorted };

template <class T>
T* slot(TdCudaWorkspace& ws, int s, int64_t count) {
  return static_cast<T*>(ws.buffer(s, static_cast<size_t>(std::max<int64_t>(count, 1)) * sizeof(T)));
}

// `flag`: this task's non-finite flag (p points at it).
void run_task(const TdTask& t, uint64_t seed, TdCudaWorkspace& ws, TdFlags flag) {
  const int64_t total = t.rows * t.n;
  if (total == 0) return;
  cudaStream_t st = cuda_stream();
  const unsigned blocks = cuda_blocks(total);
  uint8_t* targeted = slot<uint8_t>(ws, kTargeted, total);
  TDROP_CUDA_CHECK(cudaMemsetAsync(targeted, 0, total, st));
  const int64_t key_count = t.unit ? t.rows : t.n;
  if (!t.unit) {
    uint32_t* keys = slot<uint32_t>(ws, kKeys, total);
    uint32_t* keys_sorted = slot<uint32_t>(ws, kKeysSorted, total);
    int32_t* cols = slot<int32_t>(ws, kCols, total);
    int32_t* cols_sorted = slot<int32_t>(ws, kColsSorted, total);
    int32_t* offsets = slot<int32_t>(ws, kOffsets, t.rows + 1);
    magnitude_keys_kernel<<<blocks, 256, 0, st>>>(t.w, t.rows, t.n, keys, cols, flag.p,
                                                  flag.mark);
    TDROP_LAUNCH_CHECK("magnitude_keys_kernel");
    if (t.k > 0 && t.k < key_count) {
      segment_offsets_kernel<<<cuda_blocks(t.rows + 1), 256, 0, st>>>(t.rows, t.n, offsets);
      TDROP_LAUNCH_CHECK("segment_offsets_kernel");
      size_t temp_bytes = 0;
      TDROP_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(
          nullptr, temp_bytes, keys, keys_sorted, cols, cols_sorted, static_cast<int>(total),
          static_cast<int>(t.rows), offsets, offsets + 1, 0, 31, st));
      void* temp = ws.buffer(kCubTemp, temp_bytes);
      TDROP_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(
          temp, temp_bytes, keys, keys_sorted, cols, cols_sorted, static_cast<int>(total),
          static_cast<int>(t.rows), offsets, offsets + 1, 0, 31, st));
    } else {
      cols_sorted = cols;  // k = 0 targets nothing, k = n everything: no order needed
    }
    if (t.k > 0) {
      scatter_targeted_kernel<<<cuda_blocks(t.rows * t.k), 256, 0, st>>>(cols_sorted, t.rows,
                                                                          t.n, t.k, targeted);
      TDROP_LAUNCH_CHECK("scatter_targeted_kernel");
    }
  } else {
    double* norms = slot<double>(ws, kNorms, t.rows);
    double* norms_sorted = slot<double>(ws, kNormsSorted, t.rows);
    int32_t* rows = slot<int32_t>(ws, kCols, t.rows);
    int32_t* rows_sorted = slot<int32_t>(ws, kColsSorted, t.rows);
    row_norms_kernel<<<static_cast<unsigned>(std::min<int64_t>(t.rows, 65535)), kThreads, 0, st>>>(
        t.w, t.rows, t.n, norms, rows, flag.p, flag.mark);
    TDROP_LAUNCH_CHECK("row_norms_kernel");
    size_t temp_bytes = 0;
    TDROP_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, norms, norms_sorted,
                                                     rows, rows_sorted, static_cast<int>(t.rows),
                                                     0, 64, st));
    void* temp = ws.buffer(kCubTemp, temp_bytes);
    TDROP_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, norms, norms_sorted, rows,
                                                     rows_sorted, static_cast<int>(t.rows), 0, 64,
                                                     st));
    if (t.k > 0) {
      scatter_targeted_rows_kernel<<<cuda_blocks(t.k * t.n), 256, 0, st>>>(rows_sorted, t.k, t.n,
                                                                           targeted);
      TDROP_LAUNCH_CHECK("scatter_targeted_rows_kernel");
    }
  }
  // Draws: per element, or per row in unit mode (each entry of row r reads draw r).
  uint32_t* u = slot<uint32_t>(ws, kUniform, total);
  const int64_t per = (t.unit && !t.per_weight_draws) ? t.n : 1;
  philox_bits_kernel<<<blocks, 256, 0, st>>>(seed, t.stream, total, per, u);
  TDROP_LAUNCH_CHECK("philox_bits_kernel");
  uint8_t* keep = slot<uint8_t>(ws, kKeep, total);
  compare_kernel<<<blocks, 256, 0, st>>>(targeted, u, t.drop_threshold, total, keep);
  TDROP_LAUNCH_CHECK("compare_kernel");
  select_kernel<<<blocks, 256, 0, st>>>(t.w, keep, total, t.w_out);
  TDROP_LAUNCH_CHECK("select_kernel");
  pack_mask_kernel<<<cuda_blocks(t.rows * mask_words_per_row(t.n)), 256, 0, st>>>(keep, t.rows,
                                                                                  t.n, t.mask);
  TDROP_LAUNCH_CHECK("pack_mask_kernel");
}

}  // namespace

void targeted_dropout_unfused_cuda(const std::vector<TdTask>& tasks, uint64_t seed,
                                   TdCudaWorkspace& ws) {
  // Every task is checked before the first launch, so an error leaves every output untouched.
  for (const TdTask& t : tasks) {
    td_check_count(t);
    TDROP_CHECK(t.rows * t.n < (int64_t{1} << 31), "targeted dropout (unfused): layer '", t.name,
                "' has too many weights for a 32-bit sort");
  }
  const TdFlags flags = ws.nonfinite_flags(tasks.size());
  for (size_t i = 0; i < tasks.size(); ++i)
    run_task(tasks[i], seed, ws, {flags.p + i, flags.mark});
}

}  // namespace tdrop
