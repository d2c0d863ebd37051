// The memory-bound kernels of a training step (batch 128), CPU and CUDA: batch norm forward
// (training) and backward, ReLU, gradient accumulation (axpy) and the targeted-dropout mask
// gradient, each on the activation or weight shapes of ResNet-32's three stages; softmax and
// layer norm forward and backward on the zoo Transformer's attention weights and tokens.
//
// Bytes/s count what the kernels must move at least as designed: batch norm forward reads x
// twice (statistics, then normalisation) and writes y, 12 bytes per fp32 value; backward reads
// gy and x twice and writes gx, 20; ReLU 8; axpy 12 (read x and acc, write acc); mask gradient
// 8.125 (read g, write g', a mask bit); softmax forward 8 (read x, write y), backward 12 (read
// y and gy, write gx); layer norm forward 16 (read x twice, write y and xhat), backward 20
// (read g and xhat twice, write gx). CUDA cases also time a device-to-device copy of as many
// values in the same process (8 bytes each) and report `pct_of_copy`. Each CUDA kernel is
// compared with the CPU one before it is timed; a mismatch ends the case with an error.
//
// Usage: bench_step_kernels [--benchmark_filter=REGEX] [--benchmark_format=json] ...
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_timing.h"
#include "core/device.h"
#include "core/tensor.h"
#include "kernels/batch_norm.h"
#include "kernels/elementwise.h"
#include "kernels/layer_norm.h"
#include "kernels/softmax.h"
#include "kernels/targeted_dropout.h"

namespace tdrop {
namespace {

// ResNet-32's activations at batch 128 on 32x32 inputs, one per stage, and its conv weights
// as targeted-dropout rows (out channels x in channels * 3 * 3).
const std::vector<std::pair<std::string, Shape>>& activations() {
  static const std::vector<std::pair<std::string, Shape>> s = {
      {"stage1", {128, 16, 32, 32}}, {"stage2", {128, 32, 16, 16}}, {"stage3", {128, 64, 8, 8}}};
  return s;
}
const std::vector<std::pair<std::string, Shape>>& weights() {
  static const std::vector<std::pair<std::string, Shape>> s = {
      {"stage1", {16, 144}}, {"stage2", {32, 288}}, {"stage3", {64, 576}}};
  return s;
}

// The zoo Transformer at batch 128 on Fashion-MNIST: attention weights [batch * heads,
// tokens, tokens] and the token rows [batch * tokens, width] that layer norm normalises.
const std::vector<std::pair<std::string, Shape>>& attention() {
  static const std::vector<std::pair<std::string, Shape>> s = {{"transformer", {512, 49, 49}}};
  return s;
}
const std::vector<std::pair<std::string, Shape>>& tokens() {
  static const std::vector<std::pair<std::string, Shape>> s = {{"transformer", {6272, 64}}};
  return s;
}

Tensor uniform(const Shape& shape, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (float& x : v) x = u(rng);
  return Tensor::from_vector(v, shape);
}

// The tensors one op reads and writes, on one device.
using Tensors = std::vector<Tensor>;
// Runs the op on tensors that all live on the device the op is for.
using Kernel = std::function<void(const Tensors&)>;

struct Op {
  const char* name;
  double bytes_per_value;
  const std::vector<std::pair<std::string, Shape>>& (*shapes)();
  // Builds the CPU inputs and outputs for a shape.
  std::function<Tensors(const Shape&, std::mt19937&)> make;
  Kernel cpu, cuda;
  size_t output;  // the index of the tensor compared between devices
};

const std::vector<Op>& ops() {
  static const std::vector<Op> all = [] {
    std::vector<Op> v;
    // x, gamma, beta, running mean, running var, y, mean, invstd
    auto bn_make = [](const Shape& s, std::mt19937& rng) {
      const Shape c{s[1]};
      return Tensors{uniform(s, rng, -2, 2),        uniform(c, rng, 0.5, 2),
                     uniform(c, rng, -1, 1),        Tensor::zeros(c),
                     Tensor::full(c, 1.0),          Tensor::empty(s),
                     Tensor::empty(c),              Tensor::empty(c)};
    };
    v.push_back({"batch_norm_forward", 12, activations, bn_make,
                 [](const Tensors& t) {
                   batch_norm2d_train_cpu(t[0], t[1], t[2], t[3], t[4], 0.1, 1e-5, t[5], t[6], t[7]);
                 },
                 [](const Tensors& t) {
                   batch_norm2d_train_cuda(t[0], t[1], t[2], t[3], t[4], 0.1, 1e-5, t[5], t[6], t[7]);
                 },
                 5});
    // gy, x, gamma, mean, invstd, gx, ggamma, gbeta
    v.push_back({"batch_norm_backward", 20, activations,
                 [](const Shape& s, std::mt19937& rng) {
                   const Shape c{s[1]};
                   return Tensors{uniform(s, rng, -1, 1), uniform(s, rng, -2, 2),
                                  uniform(c, rng, 0.5, 2), uniform(c, rng, -0.1, 0.1),
                                  uniform(c, rng, 0.5, 1), Tensor::empty(s),
                                  Tensor::empty(c),       Tensor::empty(c)};
                 },
                 [](const Tensors& t) {
                   batch_norm2d_backward_cpu(t[0], t[1], t[2], t[3], t[4], true, t[5], t[6], t[7]);
                 },
                 [](const Tensors& t) {
                   batch_norm2d_backward_cuda(t[0], t[1], t[2], t[3], t[4], true, t[5], t[6], t[7]);
                 },
                 5});
    auto pair_make = [](const Shape& s, std::mt19937& rng) {
      return Tensors{uniform(s, rng, -1, 1), uniform(s, rng, -1, 1)};
    };
    v.push_back({"relu", 8, activations, pair_make,
                 [](const Tensors& t) { unary_cpu(UnaryOp::Relu, t[0], 1, 0, t[1]); },
                 [](const Tensors& t) { unary_cuda(UnaryOp::Relu, t[0], 1, 0, t[1]); }, 1});
    v.push_back({"axpy", 12, activations, pair_make,
                 [](const Tensors& t) { axpy_cpu(1.0, t[0], t[1]); },
                 [](const Tensors& t) { axpy_cuda(1.0, t[0], t[1]); }, 1});
    // g, mask bytes, out
    v.push_back({"td_mask_grad", 8.125, weights,
                 [](const Shape& s, std::mt19937& rng) {
                   Tensors t{uniform(s, rng, -1, 1),
                             Tensor::empty({s[0], mask_words_per_row(s[1]) * 4}, DType::U8),
                             Tensor::empty(s)};
                   std::uniform_int_distribution<int> byte(0, 255);
                   auto* m = static_cast<uint8_t*>(t[1].raw_data());
                   for (int64_t i = 0; i < t[1].numel(); ++i) m[i] = static_cast<uint8_t>(byte(rng));
                   return t;
                 },
                 [](const Tensors& t) {
                   td_mask_grad_cpu(t[0].data<float>(),
                                    reinterpret_cast<const uint32_t*>(t[1].raw_data()),
                                    t[0].size(0), t[0].size(1), t[2].data<float>());
                 },
                 [](const Tensors& t) {
                   td_mask_grad_cuda(t[0].data<float>(),
                                     reinterpret_cast<const uint32_t*>(t[1].raw_data()),
                                     t[0].size(0), t[0].size(1), t[2].data<float>());
                 },
                 2});
    v.push_back({"softmax_forward", 8, attention,
                 [](const Shape& s, std::mt19937& rng) {
                   return Tensors{uniform(s, rng, -4, 4), Tensor::empty(s)};
                 },
                 [](const Tensors& t) { softmax_forward_cpu(t[0], t[1]); },
                 [](const Tensors& t) { softmax_forward_cuda(t[0], t[1]); }, 1});
    // y (a softmax output), gy, gx
    v.push_back({"softmax_backward", 12, attention,
                 [](const Shape& s, std::mt19937& rng) {
                   Tensors t{Tensor::empty(s), uniform(s, rng, -1, 1), Tensor::empty(s)};
                   softmax_forward_cpu(uniform(s, rng, -4, 4), t[0]);
                   return t;
                 },
                 [](const Tensors& t) { softmax_backward_cpu(t[0], t[1], t[2]); },
                 [](const Tensors& t) { softmax_backward_cuda(t[0], t[1], t[2]); }, 2});
    // x, gamma, beta, y, xhat, rstd
    v.push_back({"layer_norm_forward", 16, tokens,
                 [](const Shape& s, std::mt19937& rng) {
                   const Shape d{s[1]};
                   return Tensors{uniform(s, rng, -2, 2), uniform(d, rng, 0.5, 2),
                                  uniform(d, rng, -1, 1), Tensor::empty(s),
                                  Tensor::empty(s),       Tensor::empty({s[0]})};
                 },
                 [](const Tensors& t) {
                   layer_norm_forward_cpu(t[0], t[1], t[2], 1e-5, t[3], t[4], t[5]);
                 },
                 [](const Tensors& t) {
                   layer_norm_forward_cuda(t[0], t[1], t[2], 1e-5, t[3], t[4], t[5]);
                 },
                 3});
    // g_xhat, xhat, rstd, gx
    v.push_back({"layer_norm_backward", 20, tokens,
                 [](const Shape& s, std::mt19937& rng) {
                   return Tensors{uniform(s, rng, -1, 1), uniform(s, rng, -2, 2),
                                  uniform({s[0]}, rng, 0.5, 2), Tensor::empty(s)};
                 },
                 [](const Tensors& t) { layer_norm_backward_cpu(t[0], t[1], t[2], t[3]); },
                 [](const Tensors& t) { layer_norm_backward_cuda(t[0], t[1], t[2], t[3]); }, 3});
    return v;
  }();
  return all;
}

Tensors copies_on(const Tensors& ts, Device d) {
  Tensors out;
  for (const Tensor& t : ts) out.push_back(t.clone().to(d));
  return out;
}

void set_counters(benchmark::State& state, const Op& op, int64_t n) {
  state.counters["values"] = static_cast<double>(n);
  state.counters["bytes_per_second"] = benchmark::Counter(
      op.bytes_per_value * static_cast<double>(n) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}

void BM_Cpu(benchmark::State& state, const Op& op, Shape shape) {
  std::mt19937 rng(42);
  const Tensors t = op.make(shape, rng);
  for (auto _ : state) op.cpu(t);
  set_counters(state, op, shape_numel(shape));
}

// Largest |a - b| / (1 + |a|) over two equally long float tensors.
double max_rel_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i)
    worst = std::max(worst, std::fabs(double(x[i]) - y[i]) / (1.0 + std::fabs(double(x[i]))));
  return worst;
}

void BM_Cuda(benchmark::State& state, const Op& op, Shape shape) {
  if (!cuda_available()) {
    state.SkipWithError("no CUDA GPU: CUDA step-kernel benchmarks skipped");
    return;
  }
  std::mt19937 rng(42);
  const Tensors host = op.make(shape, rng);
  const Tensors want = copies_on(host, Device::CPU);
  op.cpu(want);
  const Tensors dev = copies_on(host, Device::CUDA);
  op.cuda(dev);
  const double diff = max_rel_diff(want[op.output], dev[op.output].to(Device::CPU));
  if (!(diff <= 1e-4)) {
    const std::string msg =
        std::string(op.name) + ": CUDA differs from CPU by " + std::to_string(diff);
    state.SkipWithError(msg.c_str());
    return;
  }
  const int64_t n = shape_numel(shape);
  const Tensor src = Tensor::empty({n}, DType::F32, Device::CUDA);
  const Tensor dst = Tensor::empty({n}, DType::F32, Device::CUDA);
  const float copy_ms = median_ms([&] {
    TDROP_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), n * 4,
                                     cudaMemcpyDeviceToDevice, cuda_stream()));
  });
  auto run = [&] { op.cuda(dev); };
  for (auto _ : state) state.SetIterationTime(median_ms(run, 1) * 1e-3);
  const float ms = median_ms(run);
  set_counters(state, op, n);
  state.counters["median_us"] = ms * 1e3;
  state.counters["copy_us"] = copy_ms * 1e3;
  state.counters["GBps"] = op.bytes_per_value * static_cast<double>(n) / (ms * 1e-3) / 1e9;
  state.counters["pct_of_copy"] = 100.0 * (op.bytes_per_value * n / ms) / (8.0 * n / copy_ms);
}

void register_all() {
  for (const Op& op : ops()) {
    for (const auto& [stage, shape] : op.shapes()) {
      const std::string name = std::string(op.name) + "/" + stage;
      benchmark::RegisterBenchmark(("cpu/" + name).c_str(), BM_Cpu, op, shape)
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("cuda/" + name).c_str(), BM_Cuda, op, shape)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace
}  // namespace tdrop

int main(int argc, char** argv) { return tdrop::run_benchmarks(argc, argv, tdrop::register_all); }
