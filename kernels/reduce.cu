// CUDA reductions: sum over axes (accumulated in double, like the CPU) and row-wise argmax with
// the CPU's tie and NaN rules.
#include <cstdint>
#include <vector>

#include "core/copy.h"
#include "core/cuda_check.h"
#include "kernels/reduce.h"

namespace tdrop {
namespace {

constexpr int kWarp = 32;

__device__ __forceinline__ double warp_sum(double v) {
  for (int off = kWarp / 2; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;  // complete in lane 0
}

// Sum of v over the block, valid in thread 0. blockDim.x must be a multiple of 32 (<= 1024).
// The trailing barrier lets a caller loop and call it again without racing on `partial`.
__device__ double block_sum(double v) {
  __shared__ double partial[kWarp];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x / kWarp) ? partial[lane] : 0.0;
    v = warp_sum(v);
  }
  __syncthreads();
  return v;
}

// General case: one thread per output element. `kept` decodes the output's flat index into
// x's offset (shapes and x strides of the kept dims), `red` walks the reduced dims in row-major
// order, which is also the CPU's summation order, so the double sums are identical.
template <class T>
__global__ void sum_generic_kernel(const T* __restrict__ x, StridedIndex kept, StridedIndex red,
                                   int64_t red_n, T* __restrict__ out, int64_t out_n) {
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < out_n;
       o += (int64_t)gridDim.x * blockDim.x) {
    int64_t rem = o, base = 0;
    for (int d = kept.ndim - 1; d >= 0; --d) {
      base += (rem % kept.shape[d]) * kept.strides[d];
      rem /= kept.shape[d];
    }
    double acc = 0.0;
    for (int64_t r = 0; r < red_n; ++r) {
      int64_t rr = r, off = base;
      for (int d = red.ndim - 1; d >= 0; --d) {
        off += (rr % red.shape[d]) * red.strides[d];
        rr /= red.shape[d];
      }
      acc += static_cast<double>(x[off]);
    }
    out[o] = static_cast<T>(acc);
  }
}

// x viewed as contiguous [rows, cols], summed over rows (the bias gradient of a linear layer:
// [batch, features] -> [features]). A 32 x 16 block owns 32 adjacent columns: threadIdx.x picks
// the column so every row read is one coalesced 128-byte segment, threadIdx.y strides over rows,
// and the 16 partial sums per column are added in shared memory in a fixed order.
constexpr int kColTile = 32, kRowSplit = 16;
template <class T>
__global__ void sum_rows_kernel(const T* __restrict__ x, int64_t rows, int64_t cols,
                                T* __restrict__ out) {
  __shared__ double partial[kRowSplit][kColTile];
  const int64_t tiles = (cols + kColTile - 1) / kColTile;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t col = tile * kColTile + threadIdx.x;
    double acc = 0.0;
    if (col < cols)
      for (int64_t r = threadIdx.y; r < rows; r += kRowSplit)
        acc += static_cast<double>(x[r * cols + col]);
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && col < cols) {
      double s = 0.0;
      for (int k = 0; k < kRowSplit; ++k) s += partial[k][threadIdx.x];
      out[col] = static_cast<T>(s);
    }
    __syncthreads();  // partial is rewritten by the next tile
  }
}

// x viewed as contiguous [rows, cols], summed over cols, for long rows (a full reduction is
// rows == 1): one block per row so a long row is read by 256 threads at once.
constexpr int kRowThreads = 256;
template <class T>
__global__ void sum_cols_block_kernel(const T* __restrict__ x, int64_t rows, int64_t cols,
                                      T* __restrict__ out) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * cols;
    double acc = 0.0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) acc += static_cast<double>(row[c]);
    acc = block_sum(acc);
    if (threadIdx.x == 0) out[r] = static_cast<T>(acc);
  }
}

// The same for many shorter rows: one warp per row, so a block serves 8 rows and no thread
// idles on a short row. The warp shares its row, so the full-mask shuffle sees every lane.
template <class T>
__global__ void sum_cols_warp_kernel(const T* __restrict__ x, int64_t rows, int64_t cols,
                                     T* __restrict__ out) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / kWarp;
  const int64_t warps = (int64_t)gridDim.x * blockDim.x / kWarp;
  for (int64_t r = warp; r < rows; r += warps) {
    const T* row = x + r * cols;
    double acc = 0.0;
    for (int64_t c = lane; c < cols; c += kWarp) acc += static_cast<double>(row[c]);
    acc = warp_sum(acc);
    if (lane == 0) out[r] = static_cast<T>(acc);
  }
}

template <class T>
void sum_typed(const Tensor& x, const std::vector<bool>& reduce, const Tensor& out) {
  const int nd = static_cast<int>(x.dim());
  const int64_t out_n = out.numel();
  if (out_n == 0) return;
  const T* px = static_cast<const T*>(x.raw_data());
  T* po = static_cast<T*>(out.raw_data());

  // For contiguous x, see whether the reduced dims (ignoring size-1 dims) form one block at the
  // front ([rows, cols] summed over rows) or at the back (summed over cols).
  if (x.is_contiguous()) {
    bool kept_seen = false, reduced_seen = false, front = true, back = true;
    int64_t kept_n = 1, red_n = 1;
    for (int d = 0; d < nd; ++d) {
      const int64_t s = x.shape()[d];
      if (s == 1) continue;
      if (reduce[d]) {
        red_n *= s;
        if (kept_seen) front = false;
        reduced_seen = true;
      } else {
        kept_n *= s;
        if (reduced_seen) back = false;
        kept_seen = true;
      }
    }
    if (back && red_n > kWarp) {
      if (kept_n < 1024 && red_n >= 1024) {
        sum_cols_block_kernel<T><<<cuda_blocks(kept_n, 1), kRowThreads, 0, cuda_stream()>>>(
            px, kept_n, red_n, po);
        TDROP_LAUNCH_CHECK("sum_cols_block_kernel");
      } else {
        sum_cols_warp_kernel<T><<<cuda_blocks(kept_n, kRowThreads / kWarp), kRowThreads, 0,
                                  cuda_stream()>>>(px, kept_n, red_n, po);
        TDROP_LAUNCH_CHECK("sum_cols_warp_kernel");
      }
      return;
    }
    if (front && red_n > 1) {
      const int64_t tiles = (kept_n + kColTile - 1) / kColTile;
      sum_rows_kernel<T><<<cuda_blocks(tiles, 1), dim3(kColTile, kRowSplit), 0, cuda_stream()>>>(
          px, red_n, kept_n, po);
      TDROP_LAUNCH_CHECK("sum_rows_kernel");
      return;
    }
  }

  TDROP_CHECK(nd <= kMaxDims, "sum: more than ", kMaxDims, " dims in ", x.describe());
  StridedIndex kept, red;
  int64_t red_n = 1;
  for (int d = 0; d < nd; ++d) {
    StridedIndex& s = reduce[d] ? red : kept;
    s.shape[s.ndim] = x.shape()[d];
    s.strides[s.ndim] = x.strides()[d];
    ++s.ndim;
    if (reduce[d]) red_n *= x.shape()[d];
  }
  sum_generic_kernel<T><<<cuda_blocks(out_n), 256, 0, cuda_stream()>>>(px, kept, red, red_n, po,
                                                                      out_n);
  TDROP_LAUNCH_CHECK("sum_generic_kernel");
}

// The CPU's argmax order: a NaN beats everything, and among equals (or two NaNs) the lower
// index wins. An index of -1 marks "no candidate" (a lane with no columns).
template <class T>
__device__ __forceinline__ bool better(T v, int64_t i, T bv, int64_t bi) {
  if (i < 0) return false;
  if (bi < 0) return true;
  const bool vn = isnan(v), bn = isnan(bv);
  if (vn || bn) return vn && (!bn || i < bi);
  return v > bv || (v == bv && i < bi);
}

// One warp per row: each lane scans columns lane, lane + 32, ... keeping its best, then the
// lanes merge pairwise with shuffles. A whole warp shares a row, so the full-mask shuffles see
// every lane.
template <class T>
__global__ void argmax_rows_kernel(const T* __restrict__ x, int64_t rows, int64_t cols,
                                   int64_t* __restrict__ out) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / kWarp;
  const int64_t warps = (int64_t)gridDim.x * blockDim.x / kWarp;
  for (int64_t r = warp; r < rows; r += warps) {
    const T* row = x + r * cols;
    T best = T(0);
    int64_t bi = -1;
    for (int64_t c = lane; c < cols; c += kWarp) {
      const T v = row[c];
      if (better(v, c, best, bi)) {
        best = v;
        bi = c;
      }
    }
    for (int off = kWarp / 2; off > 0; off >>= 1) {
      const T ov = __shfl_down_sync(0xffffffffu, best, off);
      const int64_t oi = __shfl_down_sync(0xffffffffu, bi, off);
      if (better(ov, oi, best, bi)) {
        best = ov;
        bi = oi;
      }
    }
    if (lane == 0) out[r] = bi < 0 ? 0 : bi;
  }
}

template <class T>
void argmax_typed(const Tensor& x, const Tensor& out) {
  const int64_t rows = x.size(0), cols = x.size(1);
  if (rows == 0) return;
  constexpr int threads = 256, warps_per_block = threads / kWarp;
  argmax_rows_kernel<T><<<cuda_blocks(rows, warps_per_block), threads, 0, cuda_stream()>>>(
      static_cast<const T*>(x.raw_data()), rows, cols, out.data<int64_t>());
  TDROP_LAUNCH_CHECK("argmax_rows_kernel");
}

}  // namespace

void sum_axes_cuda(const Tensor& x, const std::vector<bool>& reduce, const Tensor& out) {
  if (x.dtype() == DType::F32) sum_typed<float>(x, reduce, out);
  else if (x.dtype() == DType::F64) sum_typed<double>(x, reduce, out);
  else fail("sum: unsupported dtype ", dtype_name(x.dtype()));
}

void argmax_rows_cuda(const Tensor& x, const Tensor& out) {
  if (x.dtype() == DType::F32) argmax_typed<float>(x, out);
  else if (x.dtype() == DType::F64) argmax_typed<double>(x, out);
  else fail("argmax: unsupported dtype ", dtype_name(x.dtype()));
}

}  // namespace tdrop
