// CUDA batch normalisation. Per-channel sums are split over a grid of (chunk, channel) blocks
// that each write one partial (no atomics), then one thread per channel adds its partials in a
// fixed order: the results are deterministic, and the grid keeps every SM busy even for a few
// channels. Sums accumulate in double; the batch variance is taken from sums of (x - shift)
// with shift = the channel's first value, which avoids the cancellation of E[x^2] - E[x]^2.
#include <algorithm>
#include <cstdint>

#include "core/cuda_check.h"
#include "kernels/batch_norm.h"

namespace tdrop {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 4096;  // elements of one channel summed by one block
constexpr int64_t kMaxSplits = 1024;

struct Dims {
  int64_t n, c, hw, m;  // m = n * hw values per channel
  int64_t splits, chunk;
  bool narrow;  // every element index fits 32 bits
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

Dims dims(const Tensor& x) {
  // Channels index the grid's y dimension.
  TDROP_CHECK(x.size(1) <= 65535, "batch_norm2d: ", x.size(1),
              " channels exceed the CUDA grid limit of 65535");
  Dims d{x.size(0), x.size(1), x.size(2) * x.size(3), 0, 1, 0, narrow_indices(x.numel())};
  d.m = d.n * d.hw;
  d.splits = std::clamp<int64_t>((d.m + kChunk - 1) / kChunk, 1, kMaxSplits);
  d.chunk = (d.m + d.splits - 1) / d.splits;
  return d;
}

// Index of value j (0 <= j < n*hw) of channel c.
__device__ __forceinline__ int64_t at(int64_t j, int64_t c, const Dims& d) {
  const int64_t q = div_by(j, d.hw, d.narrow);
  return (q * d.c + c) * d.hw + (j - q * d.hw);
}

// Sums a and b over the block; thread 0 gets the totals.
__device__ void block_sum2(double& a, double& b) {
  __shared__ double sa[kThreads], sb[kThreads];
  sa[threadIdx.x] = a;
  sb[threadIdx.x] = b;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      sa[threadIdx.x] += sa[threadIdx.x + s];
      sb[threadIdx.x] += sb[threadIdx.x + s];
    }
    __syncthreads();
  }
  a = sa[0];
  b = sb[0];
}

// partial[(c * splits + s) * 2 + {0, 1}] = sums of (x - shift) and (x - shift)^2 over chunk s.
template <class T>
__global__ void stats_partial_kernel(const T* __restrict__ x, Dims d, double* __restrict__ partial) {
  const int64_t c = blockIdx.y, s = blockIdx.x;
  const double shift = static_cast<double>(x[c * d.hw]);
  const int64_t begin = s * d.chunk, end = min(begin + d.chunk, d.m);
  double a = 0, b = 0;
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const double v = static_cast<double>(x[at(j, c, d)]) - shift;
    a += v;
    b += v * v;
  }
  block_sum2(a, b);
  if (threadIdx.x == 0) {
    partial[(c * d.splits + s) * 2] = a;
    partial[(c * d.splits + s) * 2 + 1] = b;
  }
}

template <class T>
__global__ void stats_finalize_kernel(const T* __restrict__ x, Dims d,
                                      const double* __restrict__ partial, T* __restrict__ rmean,
                                      T* __restrict__ rvar, double momentum, double eps,
                                      T* __restrict__ mean, T* __restrict__ invstd) {
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (c >= d.c) return;
  double a = 0, b = 0;
  for (int64_t s = 0; s < d.splits; ++s) {
    a += partial[(c * d.splits + s) * 2];
    b += partial[(c * d.splits + s) * 2 + 1];
  }
  const double m = static_cast<double>(d.m);
  const double shifted_mean = a / m;
  const double var = fmax(b / m - shifted_mean * shifted_mean, 0.0);
  const double mu = static_cast<double>(x[c * d.hw]) + shifted_mean;
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

template <class T>
__global__ void normalize_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                                 const T* __restrict__ beta, const T* __restrict__ mean,
                                 const T* __restrict__ invstd, Dims d, int64_t total,
                                 T* __restrict__ y) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = mod_by(div_by(i, d.hw, d.narrow), d.c, d.narrow);
    y[i] = (x[i] - mean[c]) * invstd[c] * gamma[c] + beta[c];
  }
}

// partial[(c * splits + s) * 2 + {0, 1}] = sums of gy and gy * xhat over chunk s.
template <class T>
__global__ void grad_partial_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                                    const T* __restrict__ mean, const T* __restrict__ invstd,
                                    Dims d, double* __restrict__ partial) {
  const int64_t c = blockIdx.y, s = blockIdx.x;
  const double mu = static_cast<double>(mean[c]), is = static_cast<double>(invstd[c]);
  const int64_t begin = s * d.chunk, end = min(begin + d.chunk, d.m);
  double a = 0, b = 0;
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const int64_t k = at(j, c, d);
    const double g = static_cast<double>(gy[k]);
    a += g;
    b += g * (static_cast<double>(x[k]) - mu) * is;
  }
  block_sum2(a, b);
  if (threadIdx.x == 0) {
    partial[(c * d.splits + s) * 2] = a;
    partial[(c * d.splits + s) * 2 + 1] = b;
  }
}

// Adds each channel's partials into sums[c * 2 + {0, 1}] and writes gbeta, ggamma.
template <class T>
__global__ void grad_finalize_kernel(Dims d, const double* __restrict__ partial,
                                     double* __restrict__ sums, T* __restrict__ ggamma,
                                     T* __restrict__ gbeta) {
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (c >= d.c) return;
  double a = 0, b = 0;
  for (int64_t s = 0; s < d.splits; ++s) {
    a += partial[(c * d.splits + s) * 2];
    b += partial[(c * d.splits + s) * 2 + 1];
  }
  sums[c * 2] = a;
  sums[c * 2 + 1] = b;
  gbeta[c] = static_cast<T>(a);
  ggamma[c] = static_cast<T>(b);
}

template <class T>
__global__ void grad_input_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                                  const T* __restrict__ gamma, const T* __restrict__ mean,
                                  const T* __restrict__ invstd, const double* __restrict__ sums,
                                  bool batch_stats, Dims d, int64_t total, T* __restrict__ gx) {
  const double inv_m = 1.0 / static_cast<double>(d.m);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = mod_by(div_by(i, d.hw, d.narrow), d.c, d.narrow);
    const double is = static_cast<double>(invstd[c]);
    const double scale = static_cast<double>(gamma[c]) * is;
    double g = static_cast<double>(gy[i]);
    if (batch_stats) {
      const double xhat = (static_cast<double>(x[i]) - static_cast<double>(mean[c])) * is;
      g -= sums[c * 2] * inv_m + xhat * sums[c * 2 + 1] * inv_m;
    }
    gx[i] = static_cast<T>(scale * g);
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

unsigned channel_blocks(int64_t c) { return static_cast<unsigned>((c + kThreads - 1) / kThreads); }

template <class T>
void normalize_launch(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                      const Tensor& invstd, const Tensor& y) {
  const Dims d = dims(x);
  const int64_t total = x.numel();
  normalize_kernel<T><<<cuda_blocks(total, kThreads), kThreads, 0, cuda_stream()>>>(
      x.data<T>(), gamma.data<T>(), beta.data<T>(), mean.data<T>(), invstd.data<T>(), d, total,
      y.data<T>());
  TDROP_LAUNCH_CHECK("batch_norm2d normalize_kernel");
}

template <class T>
void train_typed(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& rmean,
                 const Tensor& rvar, double momentum, double eps, const Tensor& y,
                 const Tensor& mean, const Tensor& invstd) {
  const Dims d = dims(x);
  Partials partial(static_cast<size_t>(d.c * d.splits * 2));
  stats_partial_kernel<T><<<dim3(static_cast<unsigned>(d.splits), static_cast<unsigned>(d.c)),
                            kThreads, 0, cuda_stream()>>>(x.data<T>(), d, partial.get());
  TDROP_LAUNCH_CHECK("batch_norm2d stats_partial_kernel");
  stats_finalize_kernel<T><<<channel_blocks(d.c), kThreads, 0, cuda_stream()>>>(
      x.data<T>(), d, partial.get(), rmean.data<T>(), rvar.data<T>(), momentum, eps,
      mean.data<T>(), invstd.data<T>());
  TDROP_LAUNCH_CHECK("batch_norm2d stats_finalize_kernel");
  normalize_launch<T>(x, gamma, beta, mean, invstd, y);
}

template <class T>
void eval_typed(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& rmean,
                const Tensor& rvar, double eps, const Tensor& y, const Tensor& mean,
                const Tensor& invstd) {
  const int64_t c = x.size(1);
  eval_stats_kernel<T><<<channel_blocks(c), kThreads, 0, cuda_stream()>>>(
      rmean.data<T>(), rvar.data<T>(), c, eps, mean.data<T>(), invstd.data<T>());
  TDROP_LAUNCH_CHECK("batch_norm2d eval_stats_kernel");
  if (x.numel() > 0) normalize_launch<T>(x, gamma, beta, mean, invstd, y);
}

template <class T>
void backward_typed(const Tensor& gy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                    const Tensor& invstd, bool batch_stats, const Tensor& gx,
                    const Tensor& ggamma, const Tensor& gbeta) {
  const Dims d = dims(x);
  Partials partial(static_cast<size_t>(d.c * d.splits * 2 + d.c * 2));
  double* sums = partial.get() + d.c * d.splits * 2;
  if (d.m > 0) {
    grad_partial_kernel<T><<<dim3(static_cast<unsigned>(d.splits), static_cast<unsigned>(d.c)),
                             kThreads, 0, cuda_stream()>>>(gy.data<T>(), x.data<T>(),
                                                           mean.data<T>(), invstd.data<T>(), d,
                                                           partial.get());
    TDROP_LAUNCH_CHECK("batch_norm2d grad_partial_kernel");
  } else {
    TDROP_CUDA_CHECK(cudaMemsetAsync(partial.get(), 0, sizeof(double) * d.c * d.splits * 2,
                                     cuda_stream()));
  }
  grad_finalize_kernel<T><<<channel_blocks(d.c), kThreads, 0, cuda_stream()>>>(
      d, partial.get(), sums, ggamma.data<T>(), gbeta.data<T>());
  TDROP_LAUNCH_CHECK("batch_norm2d grad_finalize_kernel");
  const int64_t total = x.numel();
  if (total == 0) return;
  grad_input_kernel<T><<<cuda_blocks(total, kThreads), kThreads, 0, cuda_stream()>>>(
      gy.data<T>(), x.data<T>(), gamma.data<T>(), mean.data<T>(), invstd.data<T>(), sums,
      batch_stats, d, total, gx.data<T>());
  TDROP_LAUNCH_CHECK("batch_norm2d grad_input_kernel");
}

}  // namespace

void batch_norm2d_train_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var,
                             double momentum, double eps, const Tensor& y, const Tensor& mean,
                             const Tensor& invstd) {
  if (x.dtype() == DType::F32)
    train_typed<float>(x, gamma, beta, running_mean, running_var, momentum, eps, y, mean, invstd);
  else
    train_typed<double>(x, gamma, beta, running_mean, running_var, momentum, eps, y, mean, invstd);
}

void batch_norm2d_eval_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var, double eps,
                            const Tensor& y, const Tensor& mean, const Tensor& invstd) {
  if (x.dtype() == DType::F32)
    eval_typed<float>(x, gamma, beta, running_mean, running_var, eps, y, mean, invstd);
  else
    eval_typed<double>(x, gamma, beta, running_mean, running_var, eps, y, mean, invstd);
}

void batch_norm2d_backward_cuda(const Tensor& gy, const Tensor& x, const Tensor& gamma,
                                const Tensor& mean, const Tensor& invstd, bool batch_stats,
                                const Tensor& gx, const Tensor& ggamma, const Tensor& gbeta) {
  if (x.dtype() == DType::F32)
    backward_typed<float>(gy, x, gamma, mean, invstd, batch_stats, gx, ggamma, gbeta);
  else
    backward_typed<double>(gy, x, gamma, mean, invstd, batch_stats, gx, ggamma, gbeta);
}

}  // namespace tdrop
