// CUDA pooling. Forward: one thread per output. Backward: one thread per input pixel that
// gathers from the windows covering it, in the same row-major window order in which the CPU
// scatters, so the sums match bit for bit and no atomics are needed.
#include <cstdint>

#include "core/cuda_check.h"
#include "kernels/pool.h"

namespace tdrop {
namespace {

constexpr int kThreads = 256;

struct Geom {
  int64_t planes, h, w, ho, wo;
  int64_t kh, kw, sh, sw, ph, pw;
};

Geom geom(const Tensor& x, const Tensor& y, const Pool2dParams& p) {
  return {x.size(0) * x.size(1), x.size(2), x.size(3), y.size(2), y.size(3),
          p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w};
}

// The windows (first and last output index along one axis) that contain input position i.
__device__ __forceinline__ void covering(int64_t i, int64_t k, int64_t s, int64_t pad,
                                         int64_t out, int64_t& lo, int64_t& hi) {
  const int64_t num = i + pad - k + 1;
  lo = num <= 0 ? 0 : (num + s - 1) / s;
  hi = min((i + pad) / s, out - 1);
}

template <class T>
__global__ void max_forward_kernel(const T* __restrict__ x, Geom g, T* __restrict__ y,
                                   int64_t* __restrict__ argmax, int64_t total) {
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < total;
       o += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ow = o % g.wo, oh = (o / g.wo) % g.ho, pl = o / (g.wo * g.ho);
    const T* in = x + pl * g.h * g.w;
    const int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    int64_t best = -1;
    T best_v = T(0);
    for (int64_t ih = max(h0, int64_t{0}); ih < min(h0 + g.kh, g.h); ++ih)
      for (int64_t iw = max(w0, int64_t{0}); iw < min(w0 + g.kw, g.w); ++iw) {
        const T v = in[ih * g.w + iw];
        if (best < 0 || (!isnan(best_v) && (v > best_v || isnan(v)))) {
          best = ih * g.w + iw;
          best_v = v;
        }
      }
    y[o] = best_v;
    argmax[o] = best;
  }
}

template <class T>
__global__ void max_backward_kernel(const T* __restrict__ gy, const int64_t* __restrict__ argmax,
                                    Geom g, T* __restrict__ gx, int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t iw = i % g.w, ih = (i / g.w) % g.h, pl = i / (g.w * g.h);
    const int64_t pos = ih * g.w + iw;
    int64_t oh_lo, oh_hi, ow_lo, ow_hi;
    covering(ih, g.kh, g.sh, g.ph, g.ho, oh_lo, oh_hi);
    covering(iw, g.kw, g.sw, g.pw, g.wo, ow_lo, ow_hi);
    T acc = T(0);
    for (int64_t oh = oh_lo; oh <= oh_hi; ++oh)
      for (int64_t ow = ow_lo; ow <= ow_hi; ++ow) {
        const int64_t o = (pl * g.ho + oh) * g.wo + ow;
        if (argmax[o] == pos) acc += gy[o];
      }
    gx[i] = acc;
  }
}

template <class T>
__global__ void avg_forward_kernel(const T* __restrict__ x, Geom g, T* __restrict__ y,
                                   int64_t total) {
  const T area = static_cast<T>(g.kh * g.kw);
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < total;
       o += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ow = o % g.wo, oh = (o / g.wo) % g.ho, pl = o / (g.wo * g.ho);
    const T* in = x + pl * g.h * g.w;
    const int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    T acc = T(0);
    for (int64_t ih = max(h0, int64_t{0}); ih < min(h0 + g.kh, g.h); ++ih)
      for (int64_t iw = max(w0, int64_t{0}); iw < min(w0 + g.kw, g.w); ++iw)
        acc += in[ih * g.w + iw];
    y[o] = acc / area;
  }
}

template <class T>
__global__ void avg_backward_kernel(const T* __restrict__ gy, Geom g, T* __restrict__ gx,
                                    int64_t total) {
  const T area = static_cast<T>(g.kh * g.kw);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t iw = i % g.w, ih = (i / g.w) % g.h, pl = i / (g.w * g.h);
    int64_t oh_lo, oh_hi, ow_lo, ow_hi;
    covering(ih, g.kh, g.sh, g.ph, g.ho, oh_lo, oh_hi);
    covering(iw, g.kw, g.sw, g.pw, g.wo, ow_lo, ow_hi);
    T acc = T(0);
    for (int64_t oh = oh_lo; oh <= oh_hi; ++oh)
      for (int64_t ow = ow_lo; ow <= ow_hi; ++ow) acc += gy[(pl * g.ho + oh) * g.wo + ow] / area;
    gx[i] = acc;
  }
}

// One warp per plane: lanes sum strided elements in double, then a shuffle reduction.
template <class T>
__global__ void gap_forward_kernel(const T* __restrict__ x, int64_t planes, int64_t hw,
                                   T* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  for (int64_t pl = warp; pl < planes; pl += warps) {
    double acc = 0;
    for (int64_t i = lane; i < hw; i += 32) acc += static_cast<double>(x[pl * hw + i]);
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
    if (lane == 0) y[pl] = static_cast<T>(acc / static_cast<double>(hw));
  }
}

template <class T>
__global__ void gap_backward_kernel(const T* __restrict__ gy, int64_t hw, T* __restrict__ gx,
                                    int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x)
    gx[i] = static_cast<T>(static_cast<double>(gy[i / hw]) / static_cast<double>(hw));
}

unsigned blocks(int64_t n) { return cuda_blocks(n, kThreads); }

template <class T>
void max_forward(const Tensor& x, const Pool2dParams& p, const Tensor& y, const Tensor& argmax) {
  const int64_t total = y.numel();
  if (total == 0) return;
  max_forward_kernel<T><<<blocks(total), kThreads, 0, cuda_stream()>>>(
      x.data<T>(), geom(x, y, p), y.data<T>(), argmax.data<int64_t>(), total);
  TDROP_LAUNCH_CHECK("max_pool2d max_forward_kernel");
}

template <class T>
void max_backward(const Tensor& gy, const Tensor& argmax, const Pool2dParams& p,
                  const Tensor& gx) {
  const int64_t total = gx.numel();
  if (total == 0) return;
  max_backward_kernel<T><<<blocks(total), kThreads, 0, cuda_stream()>>>(
      gy.data<T>(), argmax.data<int64_t>(), geom(gx, gy, p), gx.data<T>(), total);
  TDROP_LAUNCH_CHECK("max_pool2d max_backward_kernel");
}

template <class T>
void avg_forward(const Tensor& x, const Pool2dParams& p, const Tensor& y) {
  const int64_t total = y.numel();
  if (total == 0) return;
  avg_forward_kernel<T><<<blocks(total), kThreads, 0, cuda_stream()>>>(x.data<T>(), geom(x, y, p),
                                                                       y.data<T>(), total);
  TDROP_LAUNCH_CHECK("avg_pool2d avg_forward_kernel");
}

template <class T>
void avg_backward(const Tensor& gy, const Pool2dParams& p, const Tensor& gx) {
  const int64_t total = gx.numel();
  if (total == 0) return;
  avg_backward_kernel<T><<<blocks(total), kThreads, 0, cuda_stream()>>>(
      gy.data<T>(), geom(gx, gy, p), gx.data<T>(), total);
  TDROP_LAUNCH_CHECK("avg_pool2d avg_backward_kernel");
}

template <class T>
void gap_forward(const Tensor& x, const Tensor& y) {
  const int64_t planes = x.size(0) * x.size(1), hw = x.size(2) * x.size(3);
  if (planes == 0) return;
  gap_forward_kernel<T><<<blocks(planes * 32), kThreads, 0, cuda_stream()>>>(x.data<T>(), planes,
                                                                             hw, y.data<T>());
  TDROP_LAUNCH_CHECK("global_avg_pool gap_forward_kernel");
}

template <class T>
void gap_backward(const Tensor& gy, const Tensor& gx) {
  const int64_t total = gx.numel();
  if (total == 0) return;
  gap_backward_kernel<T><<<blocks(total), kThreads, 0, cuda_stream()>>>(
      gy.data<T>(), gx.size(2) * gx.size(3), gx.data<T>(), total);
  TDROP_LAUNCH_CHECK("global_avg_pool gap_backward_kernel");
}

}  // namespace

void max_pool2d_forward_cuda(const Tensor& x, const Pool2dParams& p, const Tensor& y,
                             const Tensor& argmax) {
  if (x.dtype() == DType::F32) max_forward<float>(x, p, y, argmax);
  else max_forward<double>(x, p, y, argmax);
}

void max_pool2d_backward_cuda(const Tensor& gy, const Tensor& argmax, const Pool2dParams& p,
                              const Tensor& gx) {
  if (gy.dtype() == DType::F32) max_backward<float>(gy, argmax, p, gx);
  else max_backward<double>(gy, argmax, p, gx);
}

void avg_pool2d_forward_cuda(const Tensor& x, const Pool2dParams& p, const Tensor& y) {
  if (x.dtype() == DType::F32) avg_forward<float>(x, p, y);
  else avg_forward<double>(x, p, y);
}

void avg_pool2d_backward_cuda(const Tensor& gy, const Pool2dParams& p, const Tensor& gx) {
  if (gy.dtype() == DType::F32) avg_backward<float>(gy, p, gx);
  else avg_backward<double>(gy, p, gx);
}

void global_avg_pool_forward_cuda(const Tensor& x, const Tensor& y) {
  if (x.dtype() == DType::F32) gap_forward<float>(x, y);
  else gap_forward<double>(x, y);
}

void global_avg_pool_backward_cuda(const Tensor& gy, const Tensor& gx) {
  if (gy.dtype() == DType::F32) gap_backward<float>(gy, gx);
  else gap_backward<double>(gy, gx);
}

}  // namespace tdrop
