// Checked CUDA/cuBLAS calls and the one stream tdrop queues its GPU work on.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.h"

#define TDROP_CUDA_CHECK(expr)                                                          \
  do {                                                                                  \
    cudaError_t err_ = (expr);                                                          \
    if (err_ != cudaSuccess)                                                            \
      ::tdrop::fail("CUDA error: ", cudaGetErrorString(err_), " in ", #expr, " (", __FILE__, \
                    ":", __LINE__, ")");                                                \
  } while (0)

// After a kernel launch: reports a failed launch with the kernel's name.
#define TDROP_LAUNCH_CHECK(kernel_name)                                                  \
  do {                                                                                  \
    cudaError_t err_ = cudaGetLastError();                                              \
    if (err_ != cudaSuccess)                                                            \
      ::tdrop::fail("CUDA kernel ", kernel_name, " failed to launch: ",                 \
                    cudaGetErrorString(err_));                                          \
  } while (0)

#define TDROP_CUBLAS_CHECK(expr)                                                        \
  do {                                                                                  \
    cublasStatus_t st_ = (expr);                                                        \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                   \
      ::tdrop::fail("cuBLAS error ", static_cast<int>(st_), " in ", #expr);             \
  } while (0)

namespace tdrop {
// The stream all tdrop GPU work goes to; created on first use.
cudaStream_t cuda_stream();
// A cuBLAS handle bound to cuda_stream().
cublasHandle_t cublas_handle();
// Grid size for a grid-stride loop over n elements.
inline unsigned cuda_blocks(int64_t n, int threads = 256) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535 * 16 ? 65535 * 16 : b));
}
}  // namespace tdrop
