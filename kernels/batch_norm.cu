// CUDA batch normalisation. Per-channel sums are split over a grid of (chunk, channel) blocks
// that each write one partial (no atomics on the sums); the last block of a channel to finish
// adds the channel's partials in a fixed order and finalises it, in the same launch. The
// results are deterministic, and the grid keeps every SM busy even for a few channels. Sums
// accumulate in double; the batch variance is taken from sums of (x - shift) with shift = the
// channel's first value, which avoids the cancellation of E[x^2] - E[x]^2. Values move as
// 16-byte packs wherever the planes and pointers allow it: these kernels are memory-bound.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <mutex>

#include "core/cuda_check.h"
#include "kernels/batch_norm.h"
#include "kernels/exact_math.cuh"

namespace tdrop {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kChunkPacks = 1024;  // packs of one channel summed by one block: 4 per thread
constexpr int64_t kMaxSplits = 1024;

// V consecutive elements moved as one 16-byte load or store (V = 1: plain scalars). A plane of
// H*W values never straddles a pack when H*W % V == 0, so all V values share one channel.
template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <class T, int V>
__device__ __forceinline__ Pack<T, V> load(const T* __restrict__ p, int64_t pack) {
  if constexpr (sizeof(T) * V == 16) {
    const int4 raw = __ldg(reinterpret_cast<const int4*>(p) + pack);
    Pack<T, V> r;
    *reinterpret_cast<int4*>(r.v) = raw;
    return r;
  } else {
    return Pack<T, V>{{p[pack]}};
  }
}

template <class T, int V>
__device__ __forceinline__ void store(T* __restrict__ p, int64_t pack, const Pack<T, V>& r) {
  if constexpr (sizeof(T) * V == 16)
    reinterpret_cast<int4*>(p)[pack] = *reinterpret_cast<const int4*>(r.v);
  else
    p[pack] = r.v[0];
}

struct Dims {
  int64_t n, c, hw, m;  // m = n * hw values per channel
  int64_t hwp, mp;      // the same counted in packs
  int64_t splits, chunk;  // blocks per channel and packs per block
  bool narrow;          // every element index fits 32 bits
};

// Whether the indices of a tensor of `total` elements fit 32-bit arithmetic: these kernels move
// few bytes per element, and a 64-bit division per element (tens of instructions) cost more
// than the memory traffic.
bool narrow_indices(int64_t total) { return total < (int64_t{1} << 31); }

// i / d and i % d, in 32 bits when `narrow` (both operands then fit).
__device__ __forceinline__ int64_t div_by(int64_t i, int64_t d, bool narrow) {
  return narrow ? static_cast<int64_t>(static_cast<uint32_t>(i) / static_cast<uint32_t>(d)) : i / d;
}
__device__ __forceinline__ int64_t mod_by(int64_t i, int64_t d, bool narrow) {
  return narrow ? static_cast<int64_t>(static_cast<uint32_t>(i) % static_cast<uint32_t>(d)) : i % d;
}

Dims dims(const Tensor& x, int v) {
  Dims d{};
  d.n = x.size(0);
  d.c = x.size(1);
  d.hw = x.size(2) * x.size(3);
  d.m = d.n * d.hw;
  d.hwp = d.hw / v;
  d.mp = d.m / v;
  d.splits = std::clamp<int64_t>((d.mp + kChunkPacks - 1) / kChunkPacks, 1, kMaxSplits);
  d.chunk = (d.mp + d.splits - 1) / d.splits;
  d.narrow = narrow_indices(x.numel());
  return d;
}

bool aligned16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw_data()) % 16 == 0; }

// The widest pack every operand allows: 16 bytes when planes split into whole packs and every
// pointer is 16-byte aligned (a view may start anywhere), else one element. Undefined operands
// (no residual) are skipped.
template <class T>
int pack_width(const Tensor& x, std::initializer_list<const Tensor*> others) {
  constexpr int wide = 16 / sizeof(T);
  if ((x.size(2) * x.size(3)) % wide != 0 || !aligned16(x)) return 1;
  for (const Tensor* t : others)
    if (t->defined() && !aligned16(*t)) return 1;
  return wide;
}

// Pack index of pack j (0 <= j < mp) of channel c.
__device__ __forceinline__ int64_t at(int64_t j, int64_t c, const Dims& d) {
  const int64_t q = div_by(j, d.hwp, d.narrow);
  return (q * d.c + c) * d.hwp + (j - q * d.hwp);
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Sums a and b over the block in a fixed order (deterministic); thread 0 gets the totals.
__device__ void block_sum2(double& a, double& b) {
  __shared__ double sa[kWarps], sb[kWarps];
  a = warp_sum(a);
  b = warp_sum(b);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // an earlier call's readers are done with sa, sb
  if (lane == 0) {
    sa[warp] = a;
    sb[warp] = b;
  }
  __syncthreads();
  if (warp == 0) {
    a = warp_sum(lane < kWarps ? sa[lane] : 0.0);
    b = warp_sum(lane < kWarps ? sb[lane] : 0.0);
  }
}

// Each block of channel c stores its partial sums (a, b) in partial[(c * splits + s) * 2 + {0,1}];
// the last block of the channel to arrive adds all of them (thread t takes splits t, t + 256, ...,
// then the block's tree) and returns true in every thread with the totals in thread 0. Saves the
// separate finalize launch that reading the partials otherwise needs; the order of the sum is
// fixed, whichever block was last.
// `arrivals[c]` must be 0 on entry; the last block puts it back to 0 for the next launch.
__device__ bool last_block_totals(double& a, double& b, double* __restrict__ partial,
                                  unsigned* __restrict__ arrivals, int64_t splits) {
  __shared__ bool last;
  const int64_t c = blockIdx.y, s = blockIdx.x;
  block_sum2(a, b);
  if (threadIdx.x == 0) {
    partial[(c * splits + s) * 2] = a;
    partial[(c * splits + s) * 2 + 1] = b;
    __threadfence();  // the partial is visible device-wide before the arrival is counted
    last = atomicAdd(&arrivals[c], 1u) == static_cast<unsigned>(splits - 1);
  }
  __syncthreads();
  if (!last) return false;
  __threadfence();
  a = 0;
  b = 0;
  // __ldcg reads L2, where the other blocks' partials are, never a stale L1 line.
  for (int64_t i = threadIdx.x; i < splits; i += blockDim.x) {
    a += __ldcg(&partial[(c * splits + i) * 2]);
    b += __ldcg(&partial[(c * splits + i) * 2 + 1]);
  }
  block_sum2(a, b);
  if (threadIdx.x == 0) arrivals[c] = 0;
  return true;
}

// Batch statistics of channel blockIdx.y over the packs of chunk blockIdx.x: sums of (x - shift)
// and (x - shift)^2, finished by the channel's last block into mean, invstd and the running
// statistics.
template <class T, int V>
__global__ void stats_kernel(const T* __restrict__ x, Dims d, double* __restrict__ partial,
                             unsigned* __restrict__ arrivals, T* __restrict__ rmean,
                             T* __restrict__ rvar, double momentum, double eps,
                             T* __restrict__ mean, T* __restrict__ invstd) {
  const int64_t c = blockIdx.y, s = blockIdx.x;
  const double shift = static_cast<double>(x[c * d.hw]);
  const int64_t begin = s * d.chunk, end = min(begin + d.chunk, d.mp);
  double a = 0, b = 0;
#pragma unroll 4
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const Pack<T, V> p = load<T, V>(x, at(j, c, d));
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const double v = static_cast<double>(p.v[k]) - shift;
      a += v;
      b += v * v;
    }
  }
  if (!last_block_totals(a, b, partial, arrivals, d.splits) || threadIdx.x != 0) return;
  const double m = static_cast<double>(d.m);
  const double shifted_mean = a / m;
  const double var = fmax(b / m - shifted_mean * shifted_mean, 0.0);
  const double mu = shift + shifted_mean;
  mean[c] = static_cast<T>(mu);
  invstd[c] = static_cast<T>(1.0 / sqrt(var + eps));
  rmean[c] = static_cast<T>((1.0 - momentum) * static_cast<double>(rmean[c]) + momentum * mu);
  rvar[c] = static_cast<T>((1.0 - momentum) * static_cast<double>(rvar[c]) +
                           momentum * var * m / (m - 1.0));
}

template <class T>
__global__ void eval_stats_kernel(const T* __restrict__ rmean, const T* __restrict__ rvar,
                                  int64_t channels, double eps, T* __restrict__ mean,
                                  T* __restrict__ invstd) {
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (c >= channels) return;
  mean[c] = rmean[c];
  invstd[c] = static_cast<T>(1.0 / sqrt(static_cast<double>(rvar[c]) + eps));
}

// y = bn(x), then + residual (when not null), then relu (when `relu`): the epilogue's steps
// round like the separate add and relu kernels, so fused and composed forms agree bit for bit;
// bn(x) rounds each step as the CPU does (no FMA), so a ReLU near zero falls the same way.
template <class T, int V>
__global__ void normalize_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                                 const T* __restrict__ beta, const T* __restrict__ mean,
                                 const T* __restrict__ invstd, Dims d, int64_t packs,
                                 const T* __restrict__ residual, bool relu, T* __restrict__ y) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < packs;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = mod_by(div_by(i, d.hwp, d.narrow), d.c, d.narrow);
    const T mu = mean[c], is = invstd[c], g = gamma[c], be = beta[c];
    Pack<T, V> p = load<T, V>(x, i);
#pragma unroll
    for (int k = 0; k < V; ++k)
      p.v[k] = exact::add_rn(exact::mul_rn(exact::mul_rn(p.v[k] - mu, is), g), be);
    if (residual != nullptr) {
      const Pack<T, V> r = load<T, V>(residual, i);
#pragma unroll
      for (int k = 0; k < V; ++k) p.v[k] = p.v[k] + r.v[k];
    }
    if (relu) {
#pragma unroll
      for (int k = 0; k < V; ++k) p.v[k] = p.v[k] <= T(0) ? T(0) : p.v[k];
    }
    store<T, V>(y, i, p);
  }
}

// Sums of gy and gy * xhat of channel blockIdx.y over chunk blockIdx.x; the channel's last block
// writes the totals to sums[c * 2 + {0, 1}], gbeta[c] and ggamma[c].
template <class T, int V>
__global__ void grad_sums_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                                 const T* __restrict__ mean, const T* __restrict__ invstd, Dims d,
                                 double* __restrict__ partial, unsigned* __restrict__ arrivals,
                                 double* __restrict__ sums, T* __restrict__ ggamma,
                                 T* __restrict__ gbeta) {
  const int64_t c = blockIdx.y, s = blockIdx.x;
  const double mu = static_cast<double>(mean[c]), is = static_cast<double>(invstd[c]);
  const int64_t begin = s * d.chunk, end = min(begin + d.chunk, d.mp);
  double a = 0, b = 0;
#pragma unroll 4
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const int64_t k = at(j, c, d);
    const Pack<T, V> g = load<T, V>(gy, k), xv = load<T, V>(x, k);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const double gd = static_cast<double>(g.v[e]);
      a += gd;
      b += gd * (static_cast<double>(xv.v[e]) - mu) * is;
    }
  }
  if (!last_block_totals(a, b, partial, arrivals, d.splits) || threadIdx.x != 0) return;
  sums[c * 2] = a;
  sums[c * 2 + 1] = b;
  gbeta[c] = static_cast<T>(a);
  ggamma[c] = static_cast<T>(b);
}

template <class T, int V>
__global__ void grad_input_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                                  const T* __restrict__ gamma, const T* __restrict__ mean,
                                  const T* __restrict__ invstd, const double* __restrict__ sums,
                                  bool batch_stats, Dims d, int64_t packs, T* __restrict__ gx) {
  const double inv_m = 1.0 / static_cast<double>(d.m);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < packs;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = mod_by(div_by(i, d.hwp, d.narrow), d.c, d.narrow);
    const double is = static_cast<double>(invstd[c]);
    const double scale = static_cast<double>(gamma[c]) * is;
    const double mu = static_cast<double>(mean[c]);
    const double mean_g = sums[c * 2] * inv_m, mean_gxhat = sums[c * 2 + 1] * inv_m;
    const Pack<T, V> g = load<T, V>(gy, i);
    Pack<T, V> out;
    if (batch_stats) {
      const Pack<T, V> xv = load<T, V>(x, i);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const double xhat = (static_cast<double>(xv.v[e]) - mu) * is;
        out.v[e] = static_cast<T>(scale * (static_cast<double>(g.v[e]) - (mean_g + xhat * mean_gxhat)));
      }
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e) out.v[e] = static_cast<T>(scale * static_cast<double>(g.v[e]));
    }
    store<T, V>(gx, i, out);
  }
}

// Scratch for the per-channel partial sums, from the caching allocator.
class Partials {
 public:
  explicit Partials(size_t count)
      : bytes_(count * sizeof(double)),
        p_(static_cast<double*>(device_alloc(Device::CUDA, bytes_, "batch_norm2d partial sums"))) {}
  ~Partials() { device_free(Device::CUDA, p_, bytes_); }
  Partials(const Partials&) = delete;
  Partials& operator=(const Partials&) = delete;
  double* get() const { return p_; }

 private:
  size_t bytes_;
  double* p_;
};

// One arrival counter per channel for last_block_totals, zero between launches. They outlive
// the launches: every launch runs on cuda_stream(), so two never use the counters at once, and
// a launch leaves them all at zero.
unsigned* arrival_counters(int64_t channels) {
  static std::mutex mu;
  static unsigned* counters = nullptr;
  static int64_t capacity = 0;
  std::lock_guard<std::mutex> lock(mu);
  if (channels > capacity) {
    const int64_t grown = std::max<int64_t>(channels, 1024);
    if (counters != nullptr)
      device_free(Device::CUDA, counters, sizeof(unsigned) * static_cast<size_t>(capacity));
    counters = static_cast<unsigned*>(device_alloc(
        Device::CUDA, sizeof(unsigned) * static_cast<size_t>(grown), "batch_norm2d counters"));
    TDROP_CUDA_CHECK(cudaMemsetAsync(counters, 0, sizeof(unsigned) * static_cast<size_t>(grown),
                                     cuda_stream()));
    capacity = grown;
  }
  return counters;
}

unsigned channel_blocks(int64_t c) { return static_cast<unsigned>((c + kThreads - 1) / kThreads); }

// The summing kernels index channels by the grid's y dimension; the element-wise ones (and
// evaluation) have no such limit.
dim3 split_grid(const Dims& d) {
  TDROP_CHECK(d.c <= 65535, "batch_norm2d: ", d.c,
              " channels exceed the CUDA grid limit of 65535 for batch statistics");
  return dim3(static_cast<unsigned>(d.splits), static_cast<unsigned>(d.c));
}

template <class T, int V>
void normalize_launch(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                      const Tensor& invstd, const Tensor& y, const BnEpilogue& then) {
  const Dims d = dims(x, V);
  const int64_t packs = x.numel() / V;
  normalize_kernel<T, V><<<cuda_blocks(packs, kThreads), kThreads, 0, cuda_stream()>>>(
      x.data<T>(), gamma.data<T>(), beta.data<T>(), mean.data<T>(), invstd.data<T>(), d, packs,
      then.residual.defined() ? then.residual.data<T>() : nullptr, then.relu, y.data<T>());
  TDROP_LAUNCH_CHECK("batch_norm2d normalize_kernel");
}

// Batch statistics into mean and invstd (and the running statistics).
template <class T, int V>
void stats_launch(const Tensor& x, const Tensor& rmean, const Tensor& rvar, double momentum,
                  double eps, const Tensor& mean, const Tensor& invstd) {
  const Dims d = dims(x, V);
  Partials partial(static_cast<size_t>(d.c * d.splits * 2));
  stats_kernel<T, V><<<split_grid(d), kThreads, 0, cuda_stream()>>>(
      x.data<T>(), d, partial.get(), arrival_counters(d.c), rmean.data<T>(), rvar.data<T>(),
      momentum, eps, mean.data<T>(), invstd.data<T>());
  TDROP_LAUNCH_CHECK("batch_norm2d stats_kernel");
}

// Per-channel sums of gy and gy * xhat (into `sums`), ggamma and gbeta.
template <class T, int V>
void grad_sums_launch(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                      const Tensor& ggamma, const Tensor& gbeta, Partials& partial,
                      double* sums) {
  const Dims d = dims(x, V);
  // With no values (N or H*W = 0) each channel's one block sums nothing: ggamma = gbeta = 0.
  grad_sums_kernel<T, V><<<split_grid(d), kThreads, 0, cuda_stream()>>>(
      gy.data<T>(), x.data<T>(), mean.data<T>(), invstd.data<T>(), d, partial.get(),
      arrival_counters(d.c), sums, ggamma.data<T>(), gbeta.data<T>());
  TDROP_LAUNCH_CHECK("batch_norm2d grad_sums_kernel");
}

template <class T, int V>
void grad_input_launch(const Tensor& gy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                       const Tensor& invstd, const double* sums, bool batch_stats,
                       const Tensor& gx) {
  const Dims d = dims(x, V);
  const int64_t packs = x.numel() / V;
  if (packs == 0) return;
  grad_input_kernel<T, V><<<cuda_blocks(packs, kThreads), kThreads, 0, cuda_stream()>>>(
      gy.data<T>(), x.data<T>(), gamma.data<T>(), mean.data<T>(), invstd.data<T>(), sums,
      batch_stats, d, packs, gx.data<T>());
  TDROP_LAUNCH_CHECK("batch_norm2d grad_input_kernel");
}

// Each kernel takes the widest pack that the operands it touches allow: the statistics read only
// x, so their summation order (and bits) never depends on where y or the residual start.
template <class T>
void train_any(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& rmean,
               const Tensor& rvar, double momentum, double eps, const Tensor& y,
               const Tensor& mean, const Tensor& invstd, const BnEpilogue& then) {
  if (x.size(1) == 0) return;
  TDROP_CHECK(x.numel() > 0, "batch_norm2d: batch statistics of the empty input ",
              x.describe());
  constexpr int kWide = 16 / sizeof(T);
  if (pack_width<T>(x, {}) > 1) stats_launch<T, kWide>(x, rmean, rvar, momentum, eps, mean, invstd);
  else stats_launch<T, 1>(x, rmean, rvar, momentum, eps, mean, invstd);
  if (pack_width<T>(x, {&y, &then.residual}) > 1)
    normalize_launch<T, kWide>(x, gamma, beta, mean, invstd, y, then);
  else
    normalize_launch<T, 1>(x, gamma, beta, mean, invstd, y, then);
}

template <class T>
void eval_any(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& rmean,
              const Tensor& rvar, double eps, const Tensor& y, const Tensor& mean,
              const Tensor& invstd, const BnEpilogue& then) {
  const int64_t c = x.size(1);
  if (c == 0) return;
  eval_stats_kernel<T><<<channel_blocks(c), kThreads, 0, cuda_stream()>>>(
      rmean.data<T>(), rvar.data<T>(), c, eps, mean.data<T>(), invstd.data<T>());
  TDROP_LAUNCH_CHECK("batch_norm2d eval_stats_kernel");
  if (x.numel() == 0) return;
  if (pack_width<T>(x, {&y, &then.residual}) > 1)
    normalize_launch<T, 16 / sizeof(T)>(x, gamma, beta, mean, invstd, y, then);
  else
    normalize_launch<T, 1>(x, gamma, beta, mean, invstd, y, then);
}

template <class T>
void backward_any(const Tensor& gy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                  const Tensor& invstd, bool batch_stats, const Tensor& gx, const Tensor& ggamma,
                  const Tensor& gbeta) {
  if (x.size(1) == 0) return;
  constexpr int kWide = 16 / sizeof(T);
  const bool wide_sums = pack_width<T>(x, {&gy}) > 1;
  // The partial sums of every chunk, then the channel totals, which grad_input_kernel reads.
  const Dims d = dims(x, wide_sums ? kWide : 1);
  Partials partial(static_cast<size_t>(d.c * d.splits * 2 + d.c * 2));
  double* sums = partial.get() + d.c * d.splits * 2;
  if (wide_sums) grad_sums_launch<T, kWide>(gy, x, mean, invstd, ggamma, gbeta, partial, sums);
  else grad_sums_launch<T, 1>(gy, x, mean, invstd, ggamma, gbeta, partial, sums);
  if (pack_width<T>(x, {&gy, &gx}) > 1)
    grad_input_launch<T, kWide>(gy, x, gamma, mean, invstd, sums, batch_stats, gx);
  else
    grad_input_launch<T, 1>(gy, x, gamma, mean, invstd, sums, batch_stats, gx);
}

}  // namespace

void batch_norm2d_train_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var,
                             double momentum, double eps, const Tensor& y, const Tensor& mean,
                             const Tensor& invstd, const BnEpilogue& then) {
  if (x.dtype() == DType::F32)
    train_any<float>(x, gamma, beta, running_mean, running_var, momentum, eps, y, mean, invstd,
                     then);
  else
    train_any<double>(x, gamma, beta, running_mean, running_var, momentum, eps, y, mean, invstd,
                      then);
}

void batch_norm2d_eval_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var, double eps,
                            const Tensor& y, const Tensor& mean, const Tensor& invstd,
                            const BnEpilogue& then) {
  if (x.dtype() == DType::F32)
    eval_any<float>(x, gamma, beta, running_mean, running_var, eps, y, mean, invstd, then);
  else
    eval_any<double>(x, gamma, beta, running_mean, running_var, eps, y, mean, invstd, then);
}

void batch_norm2d_backward_cuda(const Tensor& gy, const Tensor& x, const Tensor& gamma,
                                const Tensor& mean, const Tensor& invstd, bool batch_stats,
                                const Tensor& gx, const Tensor& ggamma, const Tensor& gbeta) {
  if (x.dtype() == DType::F32)
    backward_any<float>(gy, x, gamma, mean, invstd, batch_stats, gx, ggamma, gbeta);
  else
    backward_any<double>(gy, x, gamma, mean, invstd, batch_stats, gx, ggamma, gbeta);
}

}  // namespace tdrop
