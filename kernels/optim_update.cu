// CUDA optimizer updates: one fused pass per parameter, the formulas of optim_update.cpp
// operation for operation. Every product and sum is an explicit round-to-nearest intrinsic so
// nvcc cannot fuse them into FMAs, and Adam's bias corrections are computed on the host with
// the CPU's expression, so both devices take identical steps.
#include <cmath>
#include <cstdint>

#include "core/cuda_check.h"
#include "kernels/optim_update.h"

namespace tdrop {
namespace {

constexpr int kThreads = 256;

// g' = g + wd*w; buf = first ? g' : momentum*buf + g'; step = nesterov ? g' + momentum*buf : buf;
// w -= lr*step. buf is null when momentum == 0 (then step = g').
__global__ void sgd_kernel(float* __restrict__ w, const float* __restrict__ g,
                           float* __restrict__ buf, int64_t n, SgdParams p, bool first_step) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const float wi = w[i];
    float gi = __fadd_rn(g[i], __fmul_rn(p.weight_decay, wi));
    if (buf) {
      const float b = first_step ? gi : __fadd_rn(__fmul_rn(p.momentum, buf[i]), gi);
      buf[i] = b;
      gi = p.nesterov ? __fadd_rn(gi, __fmul_rn(p.momentum, b)) : b;
    }
    w[i] = __fsub_rn(wi, __fmul_rn(p.lr, gi));
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

void adam_update_cuda(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v,
                      AdamParams p) {
  float* pw = w.data<float>();
  const float* pg = g.data<float>();
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  const int64_t n = w.numel();
  if (n == 0) return;
  // Host-side, with exactly the CPU reference's expressions.
  const float bc1 = 1.0f - std::pow(p.beta1, static_cast<float>(p.step));
  const float bc2 = 1.0f - std::pow(p.beta2, static_cast<float>(p.step));
  const float one_m_b1 = 1.0f - p.beta1, one_m_b2 = 1.0f - p.beta2;
  adam_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, cuda_stream()>>>(
      pw, pg, pm, pv, n, p, one_m_b1, one_m_b2, bc1, bc2);
  TDROP_LAUNCH_CHECK("adam_kernel");
}

}  // namespace tdrop
