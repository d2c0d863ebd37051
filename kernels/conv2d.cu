// CUDA convolution through cuDNN's convolution API.
//
// Each distinct (shape, parameters, dtype) gets a plan: its descriptors and, for forward,
// backward-data and backward-filter, the algorithm cuDNN's heuristics rank first among those
// that are deterministic, use plain fp32/fp64 FMA math (no TF32 tensor cores, which cuDNN
// otherwise allows on Ampere and later even in CUDNN_DEFAULT_MATH) and need at most
// kMaxWorkspace bytes. Plans are made once and cached, so steady-state training only launches.
// Heuristics rather than timed search keep the choice, and so the results, identical run to run;
// cuDNN's timed search (cudnnFind*) was also no faster for ResNet-32 at batch 128 on an H200 and
// took Winograd kernels outside the fp32 tolerance for wide layers (bench/results/2026-11-26-h200).
// set_conv2d_nondeterministic(true) drops the determinism requirement (PyTorch's default): the
// heuristics may then pick algorithms that add with atomics, e.g. for backward-filter.
#include <array>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "core/cuda_check.h"
#include "kernels/conv2d.h"
#include "kernels/cudnn_check.h"

namespace tdrop {
namespace {

constexpr size_t kMaxWorkspace = size_t{1} << 30;

std::atomic<bool> g_nondeterministic{false};

cudnnHandle_t cudnn_handle() {
  static cudnnHandle_t handle = [] {
    cudnnHandle_t h;
    TDROP_CUDNN_CHECK(cudnnCreate(&h));
    TDROP_CUDNN_CHECK(cudnnSetStream(h, cuda_stream()));
    return h;
  }();
  return handle;
}

cudnnDataType_t cudnn_type(DType t) {
  if (t == DType::F32) return CUDNN_DATA_FLOAT;
  if (t == DType::F64) return CUDNN_DATA_DOUBLE;
  fail("conv2d: cuDNN path supports F32 and F64, got ", dtype_name(t));
}

int to_int(int64_t v, const char* what) {
  TDROP_CHECK(v >= 0 && v <= INT_MAX, "conv2d: ", what, " ", v, " exceeds cuDNN's int range");
  return static_cast<int>(v);
}

struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc(DType t, int64_t n, int64_t c, int64_t h, int64_t w) {
    TDROP_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d));
    TDROP_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, cudnn_type(t),
                                                 to_int(n, "batch"), to_int(c, "channels"),
                                                 to_int(h, "height"), to_int(w, "width")));
  }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(d); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
};

struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  FilterDesc(DType t, const Shape& w) {
    TDROP_CUDNN_CHECK(cudnnCreateFilterDescriptor(&d));
    TDROP_CUDNN_CHECK(cudnnSetFilter4dDescriptor(d, cudnn_type(t), CUDNN_TENSOR_NCHW,
                                                 to_int(w[0], "out channels"),
                                                 to_int(w[1], "in channels"),
                                                 to_int(w[2], "kernel height"),
                                                 to_int(w[3], "kernel width")));
  }
  ~FilterDesc() { cudnnDestroyFilterDescriptor(d); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
};

struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc(DType t, const Conv2dParams& p) {
    TDROP_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d));
    TDROP_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
        d, to_int(p.pad_h, "padding"), to_int(p.pad_w, "padding"), to_int(p.stride_h, "stride"),
        to_int(p.stride_w, "stride"), to_int(p.dilation_h, "dilation"),
        to_int(p.dilation_w, "dilation"), CUDNN_CROSS_CORRELATION, cudnn_type(t)));
    TDROP_CUDNN_CHECK(cudnnSetConvolutionGroupCount(d, to_int(p.groups, "groups")));
    // FMA math only: no TF32, so fp32 results stay within fp32 rounding of the CPU reference.
    TDROP_CUDNN_CHECK(cudnnSetConvolutionMathType(
        d, t == DType::F32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH));
  }
  ~ConvDesc() { cudnnDestroyConvolutionDescriptor(d); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
};

// Scratch memory from the caching allocator for the duration of one cuDNN call; freeing it
// right after queueing is safe because all work runs on the one stream.
class Workspace {
 public:
  explicit Workspace(size_t bytes)
      : bytes_(bytes), p_(bytes ? device_alloc(Device::CUDA, bytes, "conv2d workspace") : nullptr) {}
  ~Workspace() { device_free(Device::CUDA, p_, bytes_); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  void* get() const { return p_; }
  size_t size() const { return bytes_; }

 private:
  size_t bytes_;
  void* p_;
};

struct Plan {
  Plan(DType t, const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p)
      : xd(t, x[0], x[1], x[2], x[3]), yd(t, y[0], y[1], y[2], y[3]), bd(t, 1, w[0], 1, 1),
        wd(t, w), cd(t, p) {}
  TensorDesc xd, yd, bd;
  FilterDesc wd;
  ConvDesc cd;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  size_t fwd_ws = 0, bwd_data_ws = 0, bwd_filter_ws = 0;
};

using PlanKey = std::array<int64_t, 17>;

const char* algo_name(cudnnConvolutionFwdAlgo_t a) {
  switch (a) {
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM: return "implicit_gemm";
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM: return "implicit_precomp_gemm";
    case CUDNN_CONVOLUTION_FWD_ALGO_GEMM: return "gemm";
    case CUDNN_CONVOLUTION_FWD_ALGO_DIRECT: return "direct";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT: return "fft";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING: return "fft_tiling";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD: return "winograd";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED: return "winograd_nonfused";
    default: return "other";
  }
}
const char* algo_name(cudnnConvolutionBwdDataAlgo_t a) {
  switch (a) {
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_0: return "algo_0";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_1: return "algo_1";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT: return "fft";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING: return "fft_tiling";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD: return "winograd";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED: return "winograd_nonfused";
    default: return "other";
  }
}
const char* algo_name(cudnnConvolutionBwdFilterAlgo_t a) {
  switch (a) {
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0: return "algo_0";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1: return "algo_1";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT: return "fft";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3: return "algo_3";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED: return "winograd_nonfused";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING: return "fft_tiling";
    default: return "other";
  }
}

// TDROP_LOG_CONV_PLANS=1 prints each new plan's algorithms to stderr: which convolution gets
// which cuDNN algorithm is what a per-kernel step profile needs to be read layer by layer.
bool log_plans() {
  static const bool on = [] {
    const char* v = std::getenv("TDROP_LOG_CONV_PLANS");
    return v != nullptr && *v != '\0' && std::string(v) != "0";
  }();
  return on;
}

// The first heuristic choice that is usable, free of tensor-core math and, unless
// `nondeterministic`, deterministic.
template <class Perf>
const Perf& pick(const std::vector<Perf>& perfs, int count, bool nondeterministic,
                 const char* pass, const Shape& x, const Shape& w) {
  for (int i = 0; i < count; ++i) {
    const Perf& r = perfs[static_cast<size_t>(i)];
    if (r.status == CUDNN_STATUS_SUCCESS &&
        (nondeterministic || r.determinism == CUDNN_DETERMINISTIC) &&
        r.mathType != CUDNN_TENSOR_OP_MATH && r.mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION &&
        r.memory <= kMaxWorkspace)
      return r;
  }
  fail("conv2d: cuDNN offers no ", nondeterministic ? "" : "deterministic ", pass,
       " algorithm without tensor-core math for input ", shape_str(x), " and weight ",
       shape_str(w));
}

std::unique_ptr<Plan> make_plan(DType t, const Shape& x, const Shape& w, const Shape& y,
                                const Conv2dParams& p, bool nondeterministic) {
  auto plan = std::make_unique<Plan>(t, x, w, y, p);
  cudnnHandle_t h = cudnn_handle();
  int max = 0, got = 0;
  {
    TDROP_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &max));
    std::vector<cudnnConvolutionFwdAlgoPerf_t> perfs(static_cast<size_t>(max));
    TDROP_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
        h, plan->xd.d, plan->wd.d, plan->cd.d, plan->yd.d, max, &got, perfs.data()));
    const auto& r = pick(perfs, got, nondeterministic, "forward", x, w);
    plan->fwd = r.algo;
    plan->fwd_ws = r.memory;
  }
  {
    TDROP_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &max));
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perfs(static_cast<size_t>(max));
    TDROP_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
        h, plan->wd.d, plan->yd.d, plan->cd.d, plan->xd.d, max, &got, perfs.data()));
    const auto& r = pick(perfs, got, nondeterministic, "backward-data", x, w);
    plan->bwd_data = r.algo;
    plan->bwd_data_ws = r.memory;
  }
  {
    TDROP_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &max));
    std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perfs(static_cast<size_t>(max));
    TDROP_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        h, plan->xd.d, plan->yd.d, plan->cd.d, plan->wd.d, max, &got, perfs.data()));
    const auto& r = pick(perfs, got, nondeterministic, "backward-filter", x, w);
    plan->bwd_filter = r.algo;
    plan->bwd_filter_ws = r.memory;
  }
  // The math type travels with the descriptor: pin it to what the chosen algorithms assume.
  TDROP_CUDNN_CHECK(cudnnSetConvolutionMathType(
      plan->cd.d, t == DType::F32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH));
  if (log_plans())
    std::fprintf(stderr,
                 "conv2d plan: x %s w %s stride %lld pad %lld %s: forward %s (%zu B), "
                 "backward-data %s (%zu B), backward-filter %s (%zu B)\n",
                 shape_str(x).c_str(), shape_str(w).c_str(), static_cast<long long>(p.stride_h),
                 static_cast<long long>(p.pad_h), dtype_name(t), algo_name(plan->fwd),
                 plan->fwd_ws, algo_name(plan->bwd_data), plan->bwd_data_ws,
                 algo_name(plan->bwd_filter), plan->bwd_filter_ws);
  return plan;
}

// The cached plan for x (*) w; made on first use of a shape.
const Plan& plan_for(DType t, const Shape& x, const Shape& w, const Conv2dParams& p) {
  static std::mutex mu;
  static std::map<PlanKey, std::unique_ptr<Plan>> plans;
  const Shape y = conv2d_output_shape(x, w, p, "conv2d");
  const bool nondeterministic = g_nondeterministic.load();
  const PlanKey key{x[0], x[1], x[2], x[3], w[0], w[1], w[2], w[3], p.stride_h, p.stride_w,
                    p.pad_h, p.pad_w, p.dilation_h, p.dilation_w, p.groups,
                    static_cast<int64_t>(t), static_cast<int64_t>(nondeterministic)};
  std::lock_guard<std::mutex> lock(mu);
  auto it = plans.find(key);
  if (it == plans.end())
    it = plans.emplace(key, make_plan(t, x, w, y, p, nondeterministic)).first;
  return *it->second;
}

// cuDNN takes alpha/beta as float for float data and double for double data.
struct Scalars {
  float f[2] = {1.0f, 0.0f};
  double d[2] = {1.0, 0.0};
  Scalars(DType t, double alpha, double beta) : f{float(alpha), float(beta)}, d{alpha, beta}, t_(t) {}
  const void* alpha() const { return t_ == DType::F32 ? static_cast<const void*>(&f[0]) : &d[0]; }
  const void* beta() const { return t_ == DType::F32 ? static_cast<const void*>(&f[1]) : &d[1]; }

 private:
  DType t_;
};

}  // namespace

void set_conv2d_nondeterministic(bool allow) { g_nondeterministic = allow; }

void conv2d_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& bias,
                         const Conv2dParams& p, const Tensor& y) {
  if (y.numel() == 0) return;
  const Plan& plan = plan_for(x.dtype(), x.shape(), w.shape(), p);
  cudnnHandle_t h = cudnn_handle();
  Workspace ws(plan.fwd_ws);
  const Scalars s(x.dtype(), 1.0, 0.0), add(x.dtype(), 1.0, 1.0);
  TDROP_CUDNN_CHECK(cudnnConvolutionForward(h, s.alpha(), plan.xd.d, x.raw_data(), plan.wd.d,
                                            w.raw_data(), plan.cd.d, plan.fwd, ws.get(),
                                            ws.size(), s.beta(), plan.yd.d, y.raw_data()));
  if (bias.defined())
    TDROP_CUDNN_CHECK(cudnnAddTensor(h, add.alpha(), plan.bd.d, bias.raw_data(), add.beta(),
                                     plan.yd.d, y.raw_data()));
}

void conv2d_backward_data_cuda(const Tensor& gy, const Tensor& w, const Conv2dParams& p,
                               const Tensor& gx) {
  if (gx.numel() == 0) return;
  const Plan& plan = plan_for(gy.dtype(), gx.shape(), w.shape(), p);
  Workspace ws(plan.bwd_data_ws);
  const Scalars s(gy.dtype(), 1.0, 0.0);
  TDROP_CUDNN_CHECK(cudnnConvolutionBackwardData(
      cudnn_handle(), s.alpha(), plan.wd.d, w.raw_data(), plan.yd.d, gy.raw_data(), plan.cd.d,
      plan.bwd_data, ws.get(), ws.size(), s.beta(), plan.xd.d, gx.raw_data()));
}

void conv2d_backward_filter_cuda(const Tensor& gy, const Tensor& x, const Conv2dParams& p,
                                 const Tensor& gw) {
  if (gw.numel() == 0) return;
  if (x.numel() == 0 || gy.numel() == 0) {  // an empty batch contributes nothing
    TDROP_CUDA_CHECK(cudaMemsetAsync(gw.raw_data(), 0, gw.numel() * dtype_size(gw.dtype()),
                                     cuda_stream()));
    return;
  }
  const Plan& plan = plan_for(gy.dtype(), x.shape(), gw.shape(), p);
  Workspace ws(plan.bwd_filter_ws);
  const Scalars s(gy.dtype(), 1.0, 0.0);
  TDROP_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
      cudnn_handle(), s.alpha(), plan.xd.d, x.raw_data(), plan.yd.d, gy.raw_data(), plan.cd.d,
      plan.bwd_filter, ws.get(), ws.size(), s.beta(), plan.wd.d, gw.raw_data()));
}

void conv2d_backward_bias_cuda(const Tensor& gy, const Tensor& gb) {
  if (gb.numel() == 0) return;
  if (gy.numel() == 0) {
    TDROP_CUDA_CHECK(cudaMemsetAsync(gb.raw_data(), 0, gb.numel() * dtype_size(gb.dtype()),
                                     cuda_stream()));
    return;
  }
  const DType t = gy.dtype();
  TensorDesc dy(t, gy.size(0), gy.size(1), gy.size(2), gy.size(3)), db(t, 1, gb.size(0), 1, 1);
  const Scalars s(t, 1.0, 0.0);
  TDROP_CUDNN_CHECK(cudnnConvolutionBackwardBias(cudnn_handle(), s.alpha(), dy.d, gy.raw_data(),
                                                 s.beta(), db.d, gb.raw_data()));
}

}  // namespace tdrop
