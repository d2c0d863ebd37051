// Standard (untargeted) dropout: y = x * keep / (1 - p), keep ~ Bernoulli(1 - p) drawn from
// Philox element by element, so CPU and CUDA masks are identical for one (seed, stream).
#pragma once
#include "core/tensor.h"

namespace tdrop {

// out = x * mask * scale, where mask[i] = 1 unless philox draw i fires with probability p.
// mask_out (U8, same numel) receives the mask for backward.
void dropout_cpu(const Tensor& x, float p, uint64_t seed, uint64_t stream, const Tensor& out,
                 const Tensor& mask_out);
void dropout_cuda(const Tensor& x, float p, uint64_t seed, uint64_t stream, const Tensor& out,
                  const Tensor& mask_out);
// out = g * mask * scale (backward of dropout; also the mask application of weight dropout).
void apply_mask_cpu(const Tensor& g, const Tensor& mask, double scale, const Tensor& out);
void apply_mask_cuda(const Tensor& g, const Tensor& mask, double scale, const Tensor& out);

}  // namespace tdrop
