// CUDA optimizer updates: one fused pass per parameter (or one for all SGD parameters), the formulas of optim_update.cpp
// operation for operation. Every product and sum is an explicit round-to-nearest intrinsic so
// nvcc cannot fuse them into FMAs, and Adam's bias corrections are computed on the host with
// the CPU's expression, so both devices take identical steps.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/cuda_check.h"
#include "kernels/optim_update.h"

namespace tdrop {
namespace {

constexpr int kThreads = 256;

// g' = g + wd*w; buf = first ? g' : momentum*buf + g'; step = nesterov ? g' + momentum*buf : buf;
// w -= lr*step. buf is null when momentum == 0 (then step = g').
__device__ __forceinline__ void sgd_element(float* __restrict__ w, const float* __restrict__ g,
                                            float* __restrict__ buf, int64_t i, const SgdParams& p,
                                            bool first_step) {
  const float wi = w[i];
  float gi = __fadd_rn(g[i], __fmul_rn(p.weight_decay, wi));
  if (buf) {
    const float b = first_step ? gi : __fadd_rn(__fmul_rn(p.momentum, buf[i]), gi);
    buf[i] = b;
    gi = p.nesterov ? __fadd_rn(gi, __fmul_rn(p.momentum, b)) : b;
  }
  w[i] = __fsub_rn(wi, __fmul_rn(p.lr, gi));
}

__global__ void sgd_kernel(float* __restrict__ w, const float* __restrict__ g,
                           float* __restrict__ buf, int64_t n, SgdParams p, bool first_step) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    sgd_element(w, g, buf, i, p, first_step);
}

// Many parameters in one launch: each block updates one chunk of kChunk elements of one tensor.
// A model's ~100 small parameters would otherwise cost ~100 launches per step.
constexpr int kMultiMax = 128;
constexpr int64_t kChunk = 8 * kThreads;
struct SgdMultiTable {
  struct Entry {
    float* w;
    const float* g;
    float* buf;
    int64_t n, chunk_begin;
  } e[kMultiMax];
  int count;
  int64_t chunks;
};

__global__ void sgd_multi_kernel(SgdMultiTable t, SgdParams p, bool first_step) {
  for (int64_t c = blockIdx.x; c < t.chunks; c += gridDim.x) {
    int lo = 0, hi = t.count - 1;  // the entry owning chunk c
    while (lo < hi) {
      const int mid = (lo + hi + 1) >> 1;
      if (t.e[mid].chunk_begin <= c) lo = mid;
      else hi = mid - 1;
    }
    const SgdMultiTable::Entry& e = t.e[lo];
    const int64_t begin = (c - e.chunk_begin) * kChunk, end = min(e.n, begin + kChunk);
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads)
      sgd_element(e.w, e.g, e.buf, i, p, first_step);
  }
}

// Adam / AdamW. one_m_b1 = 1 - beta1 and one_m_b2 = 1 - beta2 are the values the CPU computes
// per element; bc1, bc2 are the bias corrections 1 - beta^step.
__global__ void adam_kernel(float* __restrict__ w, const float* __restrict__ g,
                            float* __restrict__ m, float* __restrict__ v, int64_t n, AdamParams p,
                            float one_m_b1, float one_m_b2, float bc1, float bc2) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    float wi = w[i];
    float gi = g[i];
    if (p.decoupled) wi = __fsub_rn(wi, __fmul_rn(__fmul_rn(p.lr, p.weight_decay), wi));
    else gi = __fadd_rn(gi, __fmul_rn(p.weight_decay, wi));
    const float mi = __fadd_rn(__fmul_rn(p.beta1, m[i]), __fmul_rn(one_m_b1, gi));
    const float vi = __fadd_rn(__fmul_rn(p.beta2, v[i]), __fmul_rn(__fmul_rn(one_m_b2, gi), gi));
    m[i] = mi;
    v[i] = vi;
    const float mh = __fdiv_rn(mi, bc1), vh = __fdiv_rn(vi, bc2);
    w[i] = __fsub_rn(wi, __fdiv_rn(__fmul_rn(p.lr, mh), __fadd_rn(__fsqrt_rn(vh), p.eps)));
  }
}

}  // namespace

void sgd_update_cuda(const Tensor& w, const Tensor& g, const Tensor& buf, SgdParams p,
                     bool first_step) {
  float* pw = w.data<float>();
  const float* pg = g.data<float>();
  float* pb = p.momentum != 0.0f ? buf.data<float>() : nullptr;
  const int64_t n = w.numel();
  if (n == 0) return;
  sgd_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, cuda_stream()>>>(pw, pg, pb, n, p,
                                                                       first_step);
  TDROP_LAUNCH_CHECK("sgd_kernel");
}

void sgd_update_multi_cuda(const std::vector<Tensor>& w, const std::vector<Tensor>& g,
                           const std::vector<Tensor>& buf, SgdParams p, bool first_step) {
  TDROP_CHECK(w.size() == g.size() && w.size() == buf.size(),
              "sgd_update_multi_cuda: ", w.size(), " parameters, ", g.size(), " gradients, ",
              buf.size(), " buffers");
  for (size_t first = 0; first < w.size(); first += kMultiMax) {
    SgdMultiTable t{};
    for (size_t i = first; i < std::min(w.size(), first + kMultiMax); ++i) {
      const int64_t n = w[i].numel();
      if (n == 0) continue;
      t.e[t.count++] = {w[i].data<float>(), g[i].data<float>(),
                        p.momentum != 0.0f ? buf[i].data<float>() : nullptr, n, t.chunks};
      t.chunks += (n + kChunk - 1) / kChunk;
    }
    if (t.count == 0) continue;
    const unsigned grid = static_cast<unsigned>(std::min<int64_t>(t.chunks, 1 << 20));
    sgd_multi_kernel<<<grid, kThreads, 0, cuda_stream()>>>(t, p, first_step);
    TDROP_LAUNCH_CHECK("sgd_multi_kernel");
  }
}

void adam_update_cuda(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v,
                      AdamParams p) {
  float* pw = w.data<float>();
  const float* pg = g.data<float>();
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  const int64_t n = w.numel();
  if (n == 0) return;
  const auto [bc1, bc2] = adam_bias_correction(p);
  const float one_m_b1 = 1.0f - p.beta1, one_m_b2 = 1.0f - p.beta2;
  adam_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, cuda_stream()>>>(
      pw, pg, pm, pv, n, p, one_m_b1, one_m_b2, bc1, bc2);
  TDROP_LAUNCH_CHECK("adam_kernel");
}

}  // namespace tdrop
