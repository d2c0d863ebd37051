// TDROP_HD: a function compiled for the host and, under nvcc, for CUDA kernels too, so one
// definition serves the CPU reference and the kernels that must match it bit for bit.
#pragma once

#if defined(__CUDACC__)
#define TDROP_HD __host__ __device__ __forceinline__
#else
#define TDROP_HD inline
#endif

// Full unrolling where a loop indexes a small array that must stay in registers on the device
// (the host compiler needs no hint).
#if defined(__CUDA_ARCH__)
#define TDROP_UNROLL _Pragma("unroll")
#else
#define TDROP_UNROLL
#endif
