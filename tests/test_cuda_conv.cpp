// CPU <-> CUDA agreement of the convolutional-network ops (conv2d on cuDNN, batch_norm2d,
// pooling, the option-A shortcut) and of a whole ResNet-20 training step. Each case runs the op
// on CPU and on CUDA copies of the same random inputs, back-propagates the same random weighting
// of the output, and compares outputs, input gradients and (batch norm) running statistics.
// Pooling and the shortcut add the same terms in the same order on both devices and must agree
// bit for bit; cuDNN and the batch-norm reductions sum in another order, so they get a tolerance.
// Without a GPU every test here is skipped.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/device.h"
#include "kernels/conv2d.h"
#include "kernels/conv_ops.h"
#include "kernels/ops.h"
#include "layers/optimizer.h"
#include "models/registry.h"
#include "tests/bn_epilogue.h"
#include "tests/grad_check.h"

namespace tdrop::testing {
namespace {

#define SKIP_WITHOUT_GPU_FOR(what) \
  if (!tdrop::cuda_available()) GTEST_SKIP() << "no CUDA GPU: " << (what) << " skipped"
#define SKIP_WITHOUT_GPU() SKIP_WITHOUT_GPU_FOR("CPU<->CUDA comparison")

using Tensors = std::vector<Tensor>;
using Op = std::function<Tensor(const Tensors&)>;

void expect_close(const Tensor& cpu, const Tensor& gpu, double rtol, double atol,
                  const std::string& what) {
  ASSERT_EQ(cpu.shape(), gpu.shape()) << what;
  const std::vector<double> a = cpu.to_double_vector(), b = gpu.to_double_vector();
  int reported = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const bool ok = rtol == 0 && atol == 0 ? (a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))
                                           : std::abs(a[i] - b[i]) <= atol + rtol * std::abs(a[i]);
    if (!ok && reported++ < 5)
      ADD_FAILURE() << what << " element " << i << ": cpu " << a[i] << " cuda " << b[i];
  }
}

// Runs `op` on both devices; floating inputs get gradients; compares y and every gradient.
void compare(const Op& op, const Tensors& cpu_inputs, double rtol, double atol,
             std::mt19937_64& rng) {
  auto run = [&](Device d, const Tensor& weighting) {
    Tensors in;
    for (const Tensor& t : cpu_inputs) {
      Tensor c = t.clone().to(d);
      if (c.dtype() == DType::F32 || c.dtype() == DType::F64) c.set_requires_grad(true);
      in.push_back(c);
    }
    const Tensor y = op(in);
    sum(mul(y, weighting.to(d))).backward();
    Tensors out{y};
    for (const Tensor& t : in) out.push_back(t.requires_grad() ? t.grad() : Tensor());
    return out;
  };
  Tensor shape_probe;
  {
    NoGradGuard ng;
    shape_probe = op(cpu_inputs);
  }
  const Tensor weighting = random_tensor(shape_probe.shape(), rng, -1, 1, shape_probe.dtype());
  const Tensors c = run(Device::CPU, weighting), g = run(Device::CUDA, weighting);
  expect_close(c[0], g[0], rtol, atol, "output");
  for (size_t i = 1; i < c.size(); ++i)
    if (c[i].defined()) expect_close(c[i], g[i], rtol, atol, "gradient of input " + std::to_string(i - 1));
}

struct ConvCase {
  const char* name;
  Shape x, w;
  Conv2dParams p;
  bool bias;
};
// Test listings show the case's name, not its bytes.
void PrintTo(const ConvCase& c, std::ostream* os) { *os << c.name; }

class CudaConv2d : public ::testing::TestWithParam<ConvCase> {};

TEST_P(CudaConv2d, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const ConvCase& c = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  struct Reset {
    ~Reset() { set_conv2d_nondeterministic(false); }
  } reset;
  for (auto [dt, nondeterministic] : {std::pair{DType::F32, false}, std::pair{DType::F64, false},
                                      std::pair{DType::F32, true}}) {
    set_conv2d_nondeterministic(nondeterministic);
    SCOPED_TRACE(std::string(dtype_name(dt)) +
                 (nondeterministic ? ", non-deterministic algorithms allowed" : ""));
    Tensors in{random_tensor(c.x, rng, -1, 1, dt), random_tensor(c.w, rng, -1, 1, dt)};
    if (c.bias) in.push_back(random_tensor({c.w[0]}, rng, -1, 1, dt));
    const Conv2dParams p = c.p;
    const bool bias = c.bias;
    // fp32 sums of up to a few thousand products of values in [-1, 1].
    const double tol = dt == DType::F32 ? 2e-4 : 1e-11;
    compare([=](const Tensors& t) { return conv2d(t[0], t[1], bias ? t[2] : Tensor(), p); }, in,
            tol, tol, rng);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaConv2d,
    ::testing::Values(
        ConvCase{"plain_3x3", {2, 3, 7, 5}, {4, 3, 3, 3}, {}, true},
        ConvCase{"stride_2_pad_1_odd", {3, 3, 9, 7}, {5, 3, 3, 3}, Conv2dParams::square(2, 1), true},
        ConvCase{"dilation_2", {2, 2, 9, 8}, {3, 2, 3, 3}, Conv2dParams::square(1, 2, 2), false},
        ConvCase{"groups_3", {2, 6, 6, 5}, {9, 2, 3, 3}, Conv2dParams::square(1, 1, 1, 3), true},
        ConvCase{"depthwise", {1, 4, 5, 5}, {4, 1, 3, 3}, Conv2dParams::square(2, 1, 1, 4), false},
        ConvCase{"pointwise", {2, 5, 4, 3}, {7, 5, 1, 1}, {}, true},
        ConvCase{"rect_kernel_mixed", {2, 3, 8, 9}, {2, 3, 2, 4}, {2, 1, 1, 2, 1, 2, 1}, true},
        ConvCase{"stem_7x7", {4, 1, 32, 32}, {16, 1, 7, 7}, Conv2dParams::square(1, 3), false},
        ConvCase{"resnet_stage", {8, 16, 32, 32}, {32, 16, 3, 3}, Conv2dParams::square(2, 1), false},
        ConvCase{"vgg_wide", {2, 256, 8, 8}, {512, 256, 3, 3}, Conv2dParams::square(1, 1), false}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(CudaConv2dPlans, SameShapeTwiceGivesBitIdenticalResults) {
  SKIP_WITHOUT_GPU_FOR("repeatability of cuDNN convolutions on the GPU");
  std::mt19937_64 rng(fresh_seed());
  const Tensor x = random_tensor({4, 8, 16, 16}, rng, -1, 1, DType::F32).to(Device::CUDA);
  const Tensor w = random_tensor({16, 8, 3, 3}, rng, -1, 1, DType::F32).to(Device::CUDA);
  const Tensor r = random_tensor({4, 16, 8, 8}, rng, -1, 1, DType::F32).to(Device::CUDA);
  Tensors first;
  for (int run = 0; run < 2; ++run) {
    Tensor xi = x.clone(), wi = w.clone();
    xi.set_requires_grad(true);
    wi.set_requires_grad(true);
    const Tensor y = conv2d(xi, wi, Tensor(), Conv2dParams::square(2, 1));
    sum(mul(y, r)).backward();
    const Tensors now{y, xi.grad(), wi.grad()};
    if (run == 0) first = now;
    else
      for (size_t i = 0; i < now.size(); ++i) expect_close(first[i], now[i], 0, 0, "run 2 vs 1");
  }
}

TEST(CudaBatchNorm2d, TrainingMatchesCpuIncludingRunningStatistics) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  // Shapes with one-block and many-block channels (ResNet-32's first stage at batch 128: 32
  // blocks per channel, whose last one finishes the channel), planes that split into 16-byte
  // packs (H*W % 4 == 0) and planes that do not, one pack per plane, 1x1 planes, and an offset
  // mean (cancellation).
  for (const Shape& s : {Shape{2, 3, 5, 7}, Shape{16, 4, 32, 32}, Shape{9, 64, 1, 1},
                         Shape{3, 5, 40, 41}, Shape{128, 16, 32, 32}, Shape{64, 64, 8, 8},
                         Shape{5, 3, 2, 2}, Shape{7, 2, 1, 2}}) {
    for (DType dt : {DType::F32, DType::F64}) {
      SCOPED_TRACE(shape_str(s) + " " + dtype_name(dt));
      const int64_t c = s[1];
      const Tensors in{random_tensor(s, rng, 90, 110, dt), random_tensor({c}, rng, 0.5, 2, dt),
                       random_tensor({c}, rng, -1, 1, dt)};
      const Tensor rm = random_tensor({c}, rng, -1, 1, dt), rv = random_tensor({c}, rng, 0.5, 2, dt);
      Tensor rm_cpu = rm.clone(), rv_cpu = rv.clone();
      Tensor rm_gpu = rm.to(Device::CUDA), rv_gpu = rv.to(Device::CUDA);
      const double tol = dt == DType::F32 ? 1e-4 : 1e-9;
      compare(
          [&](const Tensors& t) {
            const bool gpu = t[0].is_cuda();
            return batch_norm2d(t[0], t[1], t[2], gpu ? rm_gpu : rm_cpu, gpu ? rv_gpu : rv_cpu,
                                true, 0.1, 1e-5);
          },
          in, tol, tol, rng);
      // compare() runs the CPU op twice (shape probe + measured run) and the CUDA op once.
      Tensor rm_cpu2 = rm.clone(), rv_cpu2 = rv.clone();
      {
        NoGradGuard ng;
        batch_norm2d(in[0], in[1], in[2], rm_cpu2, rv_cpu2, true, 0.1, 1e-5);
      }
      expect_close(rm_cpu2, rm_gpu, tol, tol, "running_mean");
      expect_close(rv_cpu2, rv_gpu, tol, tol, "running_var");
    }
  }
}

// Inputs that start off a 16-byte boundary (a view one element into its storage) take the
// scalar path; its outputs, gradients and running mean and variance match the aligned copy's.
TEST(CudaBatchNorm2d, MisalignedViewMatchesAlignedCopy) {
  SKIP_WITHOUT_GPU_FOR("GPU batch norm of a misaligned view against an aligned copy");
  std::mt19937_64 rng(fresh_seed());
  const Shape s{6, 3, 4, 4};
  for (DType dt : {DType::F32, DType::F64}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor flat = random_tensor({6 * 3 * 16 + 1}, rng, -2, 2, dt).to(Device::CUDA);
    const Tensor gamma = random_tensor({3}, rng, 0.5, 2, dt).to(Device::CUDA);
    const Tensor beta = random_tensor({3}, rng, -1, 1, dt).to(Device::CUDA);
    const Tensor weighting = random_tensor(s, rng, -1, 1, dt).to(Device::CUDA);
    Tensors outs;
    for (bool aligned : {true, false}) {
      Tensor x = flat.narrow(0, 1, 6 * 3 * 16).reshape(s);
      if (aligned) x = x.clone();
      EXPECT_EQ(reinterpret_cast<uintptr_t>(x.raw_data()) % 16 == 0, aligned);
      x.set_requires_grad(true);
      const Tensor rm = Tensor::zeros({3}, dt, Device::CUDA), rv = Tensor::full({3}, 1.0, dt, Device::CUDA);
      const Tensor y = batch_norm2d(x, gamma, beta, rm, rv, true, 0.1, 1e-5);
      sum(mul(y, weighting)).backward();
      outs.push_back(y.to(Device::CPU));
      outs.push_back(x.grad().to(Device::CPU));
      outs.push_back(rm.to(Device::CPU));
      outs.push_back(rv.to(Device::CPU));
    }
    // Same sums in a different order of loads: equal within rounding, not necessarily bitwise.
    const double tol = dt == DType::F32 ? 1e-5 : 1e-12;
    for (size_t i = 0; i < 4; ++i) expect_close(outs[i], outs[i + 4], tol, tol, "aligned vs view");
  }
}

// The fused epilogue on the GPU: the composed ops' bits on the GPU (both run there), and the
// CPU's values within batch norm's tolerance. A residual off a 16-byte boundary must not change
// how the statistics are summed (they read only x).
TEST(CudaBatchNorm2d, FusedEpilogueEqualsComposedOpsAndMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (const Shape& s : {Shape{3, 4, 5, 6}, Shape{16, 8, 8, 8}})
    for (DType dt : {DType::F32, DType::F64})
      for (bool training : {true, false})
        for (bool offset : {false, true}) {
        SCOPED_TRACE(shape_str(s) + " " + dtype_name(dt) + (training ? " training" : " eval") +
                     (offset ? ", residual off 16-byte alignment" : ""));
        std::mt19937_64 rng(seed), rng_cpu(seed);
        const BnEpilogueRun g =
            run_bn_epilogue(s, dt, Device::CUDA, training, true, true, rng, offset);
        const BnEpilogueRun c = run_bn_epilogue(s, dt, Device::CPU, training, true, true, rng_cpu);
        const double tol = dt == DType::F32 ? 1e-4 : 1e-9;
        for (size_t i = 0; i < g.fused.size(); ++i) {
          expect_close(g.fused[i], g.composed[i], 0, 0, "fused vs composed on the GPU");
          expect_close(c.fused[i], g.fused[i], tol, tol, "CPU vs GPU");
        }
        }
}

// Inference has no grid limit on channels: only the summing kernels (batch statistics and the
// backward pass) index channels by the grid's y dimension.
TEST(CudaBatchNorm2d, InferenceTakesMoreChannelsThanAGridDimension) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(fresh_seed());
  const int64_t c = 70000;
  const Tensor x = random_tensor({2, c, 1, 2}, rng, -2, 2), gamma = random_tensor({c}, rng, 0.5, 2);
  const Tensor beta = random_tensor({c}, rng, -1, 1), rm = random_tensor({c}, rng, -1, 1);
  const Tensor rv = random_tensor({c}, rng, 0.5, 2);
  NoGradGuard ng;
  const Tensor y = batch_norm2d(x, gamma, beta, rm, rv, false);
  const Tensor g = batch_norm2d(x.to(Device::CUDA), gamma.to(Device::CUDA), beta.to(Device::CUDA),
                                rm.to(Device::CUDA), rv.to(Device::CUDA), false);
  expect_close(y, g, 1e-12, 1e-12, "output");
}

TEST(CudaBatchNorm2d, EvaluationMatchesCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(fresh_seed());
  for (DType dt : {DType::F32, DType::F64}) {
    const Tensor rm = random_tensor({6}, rng, -1, 1, dt), rv = random_tensor({6}, rng, 0.5, 2, dt);
    const Tensor rm_gpu = rm.to(Device::CUDA), rv_gpu = rv.to(Device::CUDA);
    const Tensors in{random_tensor({3, 6, 7, 5}, rng, -2, 2, dt),
                     random_tensor({6}, rng, 0.5, 2, dt), random_tensor({6}, rng, -1, 1, dt)};
    const double tol = dt == DType::F32 ? 1e-5 : 1e-12;
    compare(
        [&](const Tensors& t) {
          const bool gpu = t[0].is_cuda();
          return batch_norm2d(t[0], t[1], t[2], gpu ? rm_gpu : rm, gpu ? rv_gpu : rv, false);
        },
        in, tol, tol, rng);
  }
}

TEST(CudaPooling, MaxAndAveragePoolingAreBitIdentical) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> level(-3, 3);
  for (const Pool2dParams& p : {Pool2dParams::square(2), Pool2dParams::square(3, 2, 1),
                                Pool2dParams::square(3, 1, 1), Pool2dParams{2, 3, 1, 2, 1, 0}}) {
    for (DType dt : {DType::F32, DType::F64}) {
      // Coarse levels make ties common, so the tie rule is compared too.
      std::vector<double> v(3 * 4 * 9 * 11);
      for (double& e : v) e = 0.5 * level(rng);
      const Tensors in{Tensor::from_vector(v, {3, 4, 9, 11}).to(dt)};
      compare([&](const Tensors& t) { return max_pool2d(t[0], p); }, in, 0, 0, rng);
      compare([&](const Tensors& t) { return avg_pool2d(t[0], p); },
              {random_tensor({3, 4, 9, 11}, rng, -1, 1, dt)}, 0, 0, rng);
    }
  }
}

TEST(CudaPooling, GlobalAveragePoolMatchesCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(fresh_seed());
  for (const Shape& s : {Shape{2, 3, 5, 7}, Shape{64, 64, 8, 8}, Shape{1, 1, 33, 31}})
    for (DType dt : {DType::F32, DType::F64})
      compare([](const Tensors& t) { return global_avg_pool(t[0]); },
              {random_tensor(s, rng, -1, 1, dt)}, dt == DType::F32 ? 1e-6 : 1e-14,
              dt == DType::F32 ? 1e-7 : 1e-15, rng);
}

TEST(CudaShortcut, PadChannelsSubsampleIsBitIdentical) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(fresh_seed());
  for (DType dt : {DType::F32, DType::F64}) {
    compare([](const Tensors& t) { return pad_channels_subsample(t[0], 32, 2); },
            {random_tensor({4, 16, 9, 8}, rng, -1, 1, dt)}, 0, 0, rng);
    compare([](const Tensors& t) { return pad_channels_subsample(t[0], 5, 1); },
            {random_tensor({2, 5, 3, 3}, rng, -1, 1, dt)}, 0, 0, rng);
  }
}

TEST(CudaConvModels, Resnet20TrainingStepMatchesCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(fresh_seed());
  const Tensor x = random_tensor({8, 1, 32, 32}, rng, -1, 1, DType::F32);
  const Tensor y = Tensor::from_vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7}, {8});
  std::vector<ModelStep> steps;
  for (Device d : {Device::CPU, Device::CUDA}) {
    nlohmann::json cfg = nlohmann::json::object();
    auto model = build_model("resnet20", cfg);
    model->reset_parameters(17);
    steps.push_back(model_step_on(d, *model, x, y));
  }
  expect_close(steps[0].loss, steps[1].loss, 1e-4, 1e-5, "loss");
  // Twenty layers of fp32 sums in different orders (and ReLUs of values near 0 that may fall
  // either way): compare each parameter's gradient as a whole, by relative L2 distance.
  for (size_t i = 0; i < steps[0].grads.size(); ++i)
    expect_close_l2(steps[0].grads[i], steps[1].grads[i], 1e-3,
                    "gradient of parameter " + std::to_string(i));
  for (size_t i = 0; i < steps[0].buffers.size(); ++i)
    expect_close(steps[0].buffers[i], steps[1].buffers[i], 1e-3, 1e-4,
                 "buffer " + std::to_string(i));
}

}  // namespace
}  // namespace tdrop::testing
