// Products and sums rounded one at a time, as the CPU references round them: nvcc contracts a
// plain a * b + c into one FMA (a single rounding), which would make CUDA results differ from
// the CPU in the last bit, and e.g. flip a ReLU whose input lies within an ulp of zero.
#pragma once

namespace tdrop::exact {

__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

}  // namespace tdrop::exact
