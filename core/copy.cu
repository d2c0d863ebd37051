#include "core/copy.h"
#include "core/cuda_check.h"

namespace tdrop {
namespace {

template <class S, class D>
__global__ void copy_cast_kernel(const S* __restrict__ src, StridedIndex si, D* __restrict__ dst,
                                 int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t rem = i, off = 0;
    for (int d = si.ndim - 1; d >= 0; --d) {
      off += (rem % si.shape[d]) * si.strides[d];
      rem /= si.shape[d];
    }
    dst[i] = convert_element<D>(src[off]);
  }
}

template <class S, class D>
void launch(const Tensor& src, const Tensor& dst) {
  const int64_t n = src.numel();
  copy_cast_kernel<<<cuda_blocks(n), 256, 0, cuda_stream()>>>(
      static_cast<const S*>(src.raw_data()), make_strided_index(src),
      static_cast<D*>(dst.raw_data()), n);
  TDROP_LAUNCH_CHECK("copy_cast_kernel");
}

template <class S>
void dispatch_dst(const Tensor& src, const Tensor& dst) {
  switch (dst.dtype()) {
    case DType::F32: return launch<S, float>(src, dst);
    case DType::F64: return launch<S, double>(src, dst);
    case DType::I64: return launch<S, int64_t>(src, dst);
    case DType::U8: return launch<S, uint8_t>(src, dst);
  }
}

template <class T>
__global__ void fill_kernel(T* __restrict__ p, int64_t n, T value) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    p[i] = value;
}

template <class T>
void fill_typed(const Tensor& t, double value) {
  const int64_t n = t.numel();
  fill_kernel<T><<<cuda_blocks(n), 256, 0, cuda_stream()>>>(static_cast<T*>(t.raw_data()), n,
                                                            convert_element<T>(value));
  TDROP_LAUNCH_CHECK("fill_kernel");
}

}  // namespace

// On the device, not filled on the host and copied: a copy from host memory would make the
// host wait for the GPU (a backward pass seeds its gradient with Tensor::full every step).
void fill_cuda(const Tensor& t, double value) {
  if (t.numel() == 0) return;
  switch (t.dtype()) {
    case DType::F32: return fill_typed<float>(t, value);
    case DType::F64: return fill_typed<double>(t, value);
    case DType::I64: return fill_typed<int64_t>(t, value);
    case DType::U8: return fill_typed<uint8_t>(t, value);
  }
}

void copy_cast_cuda(const Tensor& src, const Tensor& dst) {
  if (src.numel() == 0) return;
  if (src.is_contiguous() && src.dtype() == dst.dtype()) {
    TDROP_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(),
                                     src.numel() * dtype_size(src.dtype()),
                                     cudaMemcpyDeviceToDevice, cuda_stream()));
    return;
  }
  switch (src.dtype()) {
    case DType::F32: return dispatch_dst<float>(src, dst);
    case DType::F64: return dispatch_dst<double>(src, dst);
    case DType::I64: return dispatch_dst<int64_t>(src, dst);
    case DType::U8: return dispatch_dst<uint8_t>(src, dst);
  }
}

}  // namespace tdrop
