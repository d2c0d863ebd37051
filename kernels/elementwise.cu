// CUDA elementwise kernels: the same formulas as elementwise.cpp, in the same precision.
// Products and sums that the CPU rounds separately are written with explicit round-to-nearest
// intrinsics (__fmul_rn, __fadd_rn, ...) so nvcc cannot contract them into an FMA: that keeps
// add/sub/mul/relu/affine/axpy bit-identical to the CPU reference.
#include <cstdint>
#include <type_traits>

#include "core/cuda_check.h"
#include "kernels/elementwise.h"
#include "kernels/exact_math.cuh"

namespace tdrop {
namespace {

using namespace exact;
constexpr int kThreads = 256;

__device__ __forceinline__ float abs_of(float a) { return fabsf(a); }
__device__ __forceinline__ double abs_of(double a) { return fabs(a); }

template <class T, BinaryOp OP>
__device__ __forceinline__ T apply(T a, T b) {
  if constexpr (OP == BinaryOp::Add) return a + b;
  else if constexpr (OP == BinaryOp::Sub) return a - b;
  else if constexpr (OP == BinaryOp::Mul) return a * b;
  else if constexpr (OP == BinaryOp::Div) return a / b;  // IEEE division (no fast-math)
  else return b <= T(0) ? T(0) : a;                       // ReluGrad: NaN b passes a
}

// Same-shape, contiguous operands: one element per thread, grid-stride.
template <class T, BinaryOp OP>
__global__ void binary_contig_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                     T* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = apply<T, OP>(a[i], b[i]);
}

// Same as binary_contig_kernel for 16-byte-aligned float data: one float4 per thread so each
// warp issues full 128-bit loads; the n % 4 tail is done by the first threads of the grid.
template <BinaryOp OP>
__global__ void binary_vec4_kernel(const float4* __restrict__ a, const float4* __restrict__ b,
                                   float4* __restrict__ out, int64_t n4, const float* __restrict__ at,
                                   const float* __restrict__ bt, float* __restrict__ ot,
                                   int64_t tail) {
  const int64_t start = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = start; i < n4; i += stride) {
    const float4 x = a[i], y = b[i];
    out[i] = make_float4(apply<float, OP>(x.x, y.x), apply<float, OP>(x.y, y.y),
                         apply<float, OP>(x.z, y.z), apply<float, OP>(x.w, y.w));
  }
  if (start < tail) ot[start] = apply<float, OP>(at[start], bt[start]);
}

// General case: out is contiguous with shape ia.shape; each operand is addressed through its
// broadcast strides (0 on broadcast dims), decoding the flat output index one dim at a time.
template <class T, BinaryOp OP>
__global__ void binary_strided_kernel(const T* __restrict__ a, StridedIndex ia,
                                      const T* __restrict__ b, StridedIndex ib, T* __restrict__ out,
                                      int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t rem = i, oa = 0, ob = 0;
    for (int d = ia.ndim - 1; d >= 0; --d) {
      const int64_t c = rem % ia.shape[d];
      rem /= ia.shape[d];
      oa += c * ia.strides[d];
      ob += c * ib.strides[d];
    }
    out[i] = apply<T, OP>(a[oa], b[ob]);
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <class T, BinaryOp OP>
void binary_launch(const Tensor& a, const Tensor& b, const Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const T* pa = static_cast<const T*>(a.raw_data());
  const T* pb = static_cast<const T*>(b.raw_data());
  T* po = static_cast<T*>(out.raw_data());
  const bool same_contiguous = a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous();
  if (!same_contiguous) {
    binary_strided_kernel<T, OP><<<cuda_blocks(n, kThreads), kThreads, 0, cuda_stream()>>>(
        pa, broadcast_index(a, out.shape()), pb, broadcast_index(b, out.shape()), po, n);
    TDROP_LAUNCH_CHECK("binary_strided_kernel");
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (aligned16(pa) && aligned16(pb) && aligned16(po)) {
      const int64_t n4 = n / 4, tail = n - n4 * 4;
      binary_vec4_kernel<OP><<<cuda_blocks(n4 > 0 ? n4 : 1, kThreads), kThreads, 0,
                               cuda_stream()>>>(
          reinterpret_cast<const float4*>(pa), reinterpret_cast<const float4*>(pb),
          reinterpret_cast<float4*>(po), n4, pa + n4 * 4, pb + n4 * 4, po + n4 * 4, tail);
      TDROP_LAUNCH_CHECK("binary_vec4_kernel");
      return;
    }
  }
  binary_contig_kernel<T, OP><<<cuda_blocks(n, kThreads), kThreads, 0, cuda_stream()>>>(pa, pb, po,
                                                                                        n);
  TDROP_LAUNCH_CHECK("binary_contig_kernel");
}

template <class T>
void binary_typed(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  switch (op) {
    case BinaryOp::Add: return binary_launch<T, BinaryOp::Add>(a, b, out);
    case BinaryOp::Sub: return binary_launch<T, BinaryOp::Sub>(a, b, out);
    case BinaryOp::Mul: return binary_launch<T, BinaryOp::Mul>(a, b, out);
    case BinaryOp::Div: return binary_launch<T, BinaryOp::Div>(a, b, out);
    case BinaryOp::ReluGrad: return binary_launch<T, BinaryOp::ReluGrad>(a, b, out);
  }
}

// op(x) for one element. Affine is x * alpha + beta rounded twice, as on the CPU.
template <class T, UnaryOp OP>
__device__ __forceinline__ T unary_apply(T x, T alpha, T beta) {
  if constexpr (OP == UnaryOp::Relu) return x <= T(0) ? T(0) : x;  // NaN stays NaN
  else if constexpr (OP == UnaryOp::Affine) return add_rn(mul_rn(x, alpha), beta);
  else if constexpr (OP == UnaryOp::Sign) return x > T(0) ? alpha : x < T(0) ? -alpha : T(0);
  else return abs_of(x);
}

// out = op(a) on contiguous data.
template <class T, UnaryOp OP>
__global__ void unary_kernel(const T* __restrict__ a, T* __restrict__ out, T alpha, T beta,
                             int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = unary_apply<T, OP>(a[i], alpha, beta);
}

// unary_kernel for 16-byte-aligned float data, one float4 per thread as in binary_vec4_kernel.
template <UnaryOp OP>
__global__ void unary_vec4_kernel(const float4* __restrict__ a, float4* __restrict__ out,
                                  float alpha, float beta, int64_t n4,
                                  const float* __restrict__ at, float* __restrict__ ot,
                                  int64_t tail) {
  const int64_t start = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = start; i < n4; i += stride) {
    const float4 x = a[i];
    out[i] = make_float4(unary_apply<float, OP>(x.x, alpha, beta),
                         unary_apply<float, OP>(x.y, alpha, beta),
                         unary_apply<float, OP>(x.z, alpha, beta),
                         unary_apply<float, OP>(x.w, alpha, beta));
  }
  if (start < tail) ot[start] = unary_apply<float, OP>(at[start], alpha, beta);
}

template <class T, UnaryOp OP>
void unary_launch(const T* pa, T* po, T alpha, T beta, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    if (aligned16(pa) && aligned16(po)) {
      const int64_t n4 = n / 4, tail = n - n4 * 4;
      unary_vec4_kernel<OP><<<cuda_blocks(n4 > 0 ? n4 : 1, kThreads), kThreads, 0,
                              cuda_stream()>>>(
          reinterpret_cast<const float4*>(pa), reinterpret_cast<float4*>(po), alpha, beta, n4,
          pa + n4 * 4, po + n4 * 4, tail);
      TDROP_LAUNCH_CHECK("unary_vec4_kernel");
      return;
    }
  }
  unary_kernel<T, OP><<<cuda_blocks(n, kThreads), kThreads, 0, cuda_stream()>>>(pa, po, alpha,
                                                                                 beta, n);
  TDROP_LAUNCH_CHECK("unary_kernel");
}

template <class T>
void unary_typed(UnaryOp op, const Tensor& a_in, double alpha, double beta, const Tensor& out) {
  const Tensor a = a_in.contiguous();
  const int64_t n = a.numel();
  if (n == 0) return;
  const T* pa = static_cast<const T*>(a.raw_data());
  T* po = static_cast<T*>(out.raw_data());
  const T al = static_cast<T>(alpha), be = static_cast<T>(beta);
  switch (op) {
    case UnaryOp::Relu: return unary_launch<T, UnaryOp::Relu>(pa, po, al, be, n);
    case UnaryOp::Affine: return unary_launch<T, UnaryOp::Affine>(pa, po, al, be, n);
    case UnaryOp::Abs: return unary_launch<T, UnaryOp::Abs>(pa, po, al, be, n);
    case UnaryOp::Sign: return unary_launch<T, UnaryOp::Sign>(pa, po, al, be, n);
  }
}

// acc += alpha * x, the autograd engine's gradient accumulation. No __restrict__: x may be
// acc itself (a gradient added to itself).
template <class T>
__global__ void axpy_kernel(T alpha, const T* x, T* acc, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    acc[i] = add_rn(acc[i], mul_rn(alpha, x[i]));
}

// axpy_kernel on 16-byte-aligned float data, one float4 per thread; the n % 4 tail is done by
// the first threads of the grid.
__global__ void axpy_vec4_kernel(float alpha, const float4* x, float4* acc, int64_t n4,
                                 const float* xt, float* acct, int64_t tail) {
  const int64_t start = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = start; i < n4; i += stride) {
    const float4 v = x[i];
    float4 r = acc[i];
    r.x = add_rn(r.x, mul_rn(alpha, v.x));
    r.y = add_rn(r.y, mul_rn(alpha, v.y));
    r.z = add_rn(r.z, mul_rn(alpha, v.z));
    r.w = add_rn(r.w, mul_rn(alpha, v.w));
    acc[i] = r;
  }
  if (start < tail) acct[start] = add_rn(acct[start], mul_rn(alpha, xt[start]));
}

// Lowers *first to the smallest index holding a NaN or Inf. Threads whose index is already
// above the current best skip the atomic, so a tensor full of NaNs does not serialise.
template <class T>
__global__ void first_nonfinite_kernel(const T* __restrict__ x, int64_t n,
                                       unsigned long long* first) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    if (!isfinite(x[i])) {
      if (static_cast<unsigned long long>(i) < *reinterpret_cast<volatile unsigned long long*>(first))
        atomicMin(first, static_cast<unsigned long long>(i));
      return;  // later indices of this thread can only be larger
    }
  }
}

template <class T>
int64_t first_nonfinite_typed(const Tensor& x) {
  const int64_t n = x.numel();
  // The flag starts as all ones (-1 as int64: none found) and is read back synchronously.
  Tensor flag = Tensor::empty({1}, DType::I64, Device::CUDA);
  TDROP_CUDA_CHECK(cudaMemsetAsync(flag.raw_data(), 0xFF, sizeof(int64_t), cuda_stream()));
  first_nonfinite_kernel<T><<<cuda_blocks(n, kThreads), kThreads, 0, cuda_stream()>>>(
      static_cast<const T*>(x.raw_data()), n,
      reinterpret_cast<unsigned long long*>(flag.raw_data()));
  TDROP_LAUNCH_CHECK("first_nonfinite_kernel");
  return flag.to_vector<int64_t>()[0];
}

}  // namespace

void binary_cuda(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  switch (out.dtype()) {
    case DType::F32: return binary_typed<float>(op, a, b, out);
    case DType::F64: return binary_typed<double>(op, a, b, out);
    default: fail(binary_op_name(op), ": unsupported dtype ", dtype_name(out.dtype()));
  }
}

void unary_cuda(UnaryOp op, const Tensor& a, double alpha, double beta, const Tensor& out) {
  switch (out.dtype()) {
    case DType::F32: return unary_typed<float>(op, a, alpha, beta, out);
    case DType::F64: return unary_typed<double>(op, a, alpha, beta, out);
    default: fail("unary op: unsupported dtype ", dtype_name(out.dtype()));
  }
}

void axpy_cuda(double alpha, const Tensor& x, const Tensor& acc) {
  const int64_t n = x.numel();
  if (n == 0) return;
  if (acc.dtype() == DType::F32) {
    const float* px = x.data<float>();
    float* pacc = acc.data<float>();
    const float a = static_cast<float>(alpha);
    if (aligned16(px) && aligned16(pacc)) {
      const int64_t n4 = n / 4, tail = n - n4 * 4;
      axpy_vec4_kernel<<<cuda_blocks(n4 > 0 ? n4 : 1, kThreads), kThreads, 0, cuda_stream()>>>(
          a, reinterpret_cast<const float4*>(px), reinterpret_cast<float4*>(pacc), n4,
          px + n4 * 4, pacc + n4 * 4, tail);
      TDROP_LAUNCH_CHECK("axpy_vec4_kernel");
      return;
    }
    axpy_kernel<float><<<cuda_blocks(n, kThreads), kThreads, 0, cuda_stream()>>>(a, px, pacc, n);
  } else {
    axpy_kernel<double><<<cuda_blocks(n, kThreads), kThreads, 0, cuda_stream()>>>(
        alpha, x.data<double>(), acc.data<double>(), n);
  }
  TDROP_LAUNCH_CHECK("axpy_kernel");
}

int64_t first_nonfinite_cuda(const Tensor& x_in) {
  const Tensor x = x_in.contiguous();
  if (x.numel() == 0) return -1;
  if (x.dtype() == DType::F32) return first_nonfinite_typed<float>(x);
  if (x.dtype() == DType::F64) return first_nonfinite_typed<double>(x);
  return -1;
}

}  // namespace tdrop
