// Every differentiable op, checked against central finite differences in double precision.
// One table: adding an op means adding one entry.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/device.h"
#include "kernels/conv_ops.h"
#include "kernels/ops.h"
#include "tests/expect_error.h"
#include "tests/grad_check.h"

namespace tdrop::testing {
namespace {

struct InputSpec {
  Shape shape;
  double lo = -1.0, hi = 1.0;  // e.g. keep a divisor away from zero
};

struct GradCase {
  const char* name;
  std::vector<InputSpec> inputs;
  std::function<Tensor(const std::vector<Tensor>&)> f;
};

// Values near 0 would put relu's kink inside the finite-difference step; keep them away.
constexpr double kAway = 0.05;

Tensor labels_for(int64_t n, int64_t classes) {
  std::vector<int64_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) y[i] = (i * 7 + 3) % classes;
  return Tensor::from_vector(y, {n});
}

std::vector<GradCase> cases() {
  return {
      {"add_same_shape", {{{3, 4}}, {{3, 4}}}, [](auto& x) { return add(x[0], x[1]); }},
      {"add_broadcast_3d", {{{3, 1, 5}}, {{4, 5}}}, [](auto& x) { return add(x[0], x[1]); }},
      {"add_broadcast_scalar_shape", {{{2, 3}}, {{1}}}, [](auto& x) { return add(x[0], x[1]); }},
      {"sub_outer_broadcast", {{{4, 1}}, {{1, 5}}}, [](auto& x) { return sub(x[0], x[1]); }},
      {"mul_row_broadcast", {{{3, 4}}, {{4}}}, [](auto& x) { return mul(x[0], x[1]); }},
      {"mul_self", {{{7}}}, [](auto& x) { return mul(x[0], x[0]); }},
      {"div_column_broadcast", {{{3, 4}}, {{3, 1}, 0.5, 2.0}},
       [](auto& x) { return div(x[0], x[1]); }},
      {"add_scalar", {{{5}}}, [](auto& x) { return add_scalar(x[0], 2.5); }},
      {"mul_scalar", {{{2, 3}}}, [](auto& x) { return mul_scalar(x[0], -1.5); }},
      {"relu_positive_side", {{{9}, kAway, 1.0}}, [](auto& x) { return relu(x[0]); }},
      {"relu_negative_side", {{{9}, -1.0, -kAway}}, [](auto& x) { return relu(x[0]); }},
      {"matmul", {{{5, 7}}, {{7, 3}}}, [](auto& x) { return matmul(x[0], x[1]); }},
      {"matmul_odd", {{{1, 13}}, {{13, 1}}}, [](auto& x) { return matmul(x[0], x[1]); }},
      {"linear_bias", {{{4, 6}}, {{5, 6}}, {{5}}},
       [](auto& x) { return linear(x[0], x[1], x[2]); }},
      {"linear_no_bias", {{{3, 2}}, {{4, 2}}}, [](auto& x) { return linear(x[0], x[1], Tensor()); }},
      {"sum_all", {{{3, 4}}}, [](auto& x) { return sum(x[0]); }},
      {"sum_axis0", {{{3, 4}}}, [](auto& x) { return sum(x[0], {0}); }},
      {"sum_axes_keepdim", {{{2, 3, 4}}}, [](auto& x) { return sum(x[0], {1, 2}, true); }},
      {"mean_last_axis", {{{2, 5}}}, [](auto& x) { return mean(x[0], {-1}); }},
      {"mean_all", {{{3, 3}}}, [](auto& x) { return mean(x[0]); }},
      {"reshape", {{{2, 6}}}, [](auto& x) { return reshape(x[0], {3, -1}); }},
      {"transpose_3d", {{{2, 3, 4}}}, [](auto& x) { return transpose(x[0], 0, 2); }},
      {"bmm", {{{3, 2, 5}}, {{3, 5, 4}}}, [](auto& x) { return bmm(x[0], x[1]); }},
      {"bmm_trans_b", {{{2, 3, 5}}, {{2, 4, 5}}}, [](auto& x) { return bmm(x[0], x[1], true); }},
      {"bmm_odd", {{{1, 1, 7}}, {{1, 7, 1}}}, [](auto& x) { return bmm(x[0], x[1]); }},
      {"softmax", {{{3, 5}, -3.0, 3.0}}, [](auto& x) { return softmax(x[0]); }},
      {"softmax_3d_one_column", {{{2, 3, 1}}}, [](auto& x) { return softmax(x[0]); }},
      {"softmax_wide_row", {{{2, 37}, -2.0, 2.0}}, [](auto& x) { return softmax(x[0]); }},
      // Large logits: exp overflows a double beyond 709, so only a softmax shifted by the row's
      // max gets values and gradients here (the F32 case is in test_row_ops.cpp).
      {"softmax_large_logits", {{{3, 5}, 800.0, 803.0}}, [](auto& x) { return softmax(x[0]); }},
      {"layer_norm", {{{4, 6}, -2.0, 2.0}, {{6}, 0.5, 2.0}, {{6}}},
       [](auto& x) { return layer_norm(x[0], x[1], x[2]); }},
      {"layer_norm_3d_wide", {{{2, 3, 33}, -2.0, 2.0}, {{33}, -1.0, 1.0}, {{33}}},
       [](auto& x) { return layer_norm(x[0], x[1], x[2], 1e-3); }},
      {"cross_entropy", {{{6, 5}, -3.0, 3.0}},
       [](auto& x) { return cross_entropy(x[0], labels_for(6, 5)); }},
      {"cross_entropy_one_class_row", {{{1, 3}}},
       [](auto& x) { return cross_entropy(x[0], labels_for(1, 3)); }},
      {"cross_entropy_large_logits", {{{6, 5}, 500.0, 503.0}},
       [](auto& x) { return cross_entropy(x[0], labels_for(6, 5)); }},
      {"dropout", {{{4, 8}}}, [](auto& x) { return dropout(x[0], 0.5f, 42, 7); }},
      {"apply_mask", {{{10}}},
       [](auto& x) {
         return apply_mask(x[0], Tensor::from_vector<uint8_t>({1, 0, 1, 1, 0, 0, 1, 0, 1, 1}, {10}),
                           1.0);
       }},
      {"conv2d", {{{2, 3, 5, 6}}, {{4, 3, 3, 3}}, {{4}}},
       [](auto& x) { return conv2d(x[0], x[1], x[2]); }},
      {"conv2d_stride2_pad1_no_bias", {{{2, 2, 7, 6}}, {{3, 2, 3, 3}}},
       [](auto& x) { return conv2d(x[0], x[1], Tensor(), Conv2dParams::square(2, 1)); }},
      {"conv2d_dilation2_pad2", {{{1, 2, 7, 8}}, {{2, 2, 3, 3}}, {{2}}},
       [](auto& x) { return conv2d(x[0], x[1], x[2], Conv2dParams::square(1, 2, 2)); }},
      {"conv2d_groups2", {{{2, 4, 5, 5}}, {{6, 2, 3, 3}}, {{6}}},
       [](auto& x) { return conv2d(x[0], x[1], x[2], Conv2dParams::square(1, 1, 1, 2)); }},
      {"conv2d_pointwise", {{{2, 3, 4, 5}}, {{5, 3, 1, 1}}},
       [](auto& x) { return conv2d(x[0], x[1], Tensor()); }},
      {"conv2d_rect_mixed_strides", {{{2, 2, 6, 7}}, {{3, 2, 2, 3}}, {{3}}},
       [](auto& x) { return conv2d(x[0], x[1], x[2], {2, 1, 1, 0, 1, 2, 1}); }},
      // Training mode: fresh running statistics each call (they do not affect the output).
      {"batch_norm2d_train", {{{3, 2, 2, 3}, -2.0, 3.0}, {{2}, 0.5, 2.0}, {{2}}},
       [](auto& x) {
         return batch_norm2d(x[0], x[1], x[2], Tensor::zeros({2}, DType::F64),
                             Tensor::full({2}, 1.0, DType::F64), true);
       }},
      {"batch_norm2d_train_1x1_planes", {{{5, 3, 1, 1}}, {{3}}, {{3}}},
       [](auto& x) {
         return batch_norm2d(x[0], x[1], x[2], Tensor::zeros({3}, DType::F64),
                             Tensor::full({3}, 1.0, DType::F64), true);
       }},
      // The fused residual add (its ReLU is checked bit for bit against relu() in test_conv).
      {"batch_norm2d_train_plus_residual", {{{3, 2, 2, 3}}, {{2}, 0.5, 2.0}, {{2}}, {{3, 2, 2, 3}}},
       [](auto& x) {
         return batch_norm2d(x[0], x[1], x[2], Tensor::zeros({2}, DType::F64),
                             Tensor::full({2}, 1.0, DType::F64), true, 0.1, 1e-5,
                             BnEpilogue{x[3], false});
       }},
      {"batch_norm2d_eval", {{{2, 3, 2, 2}}, {{3}}, {{3}}},
       [](auto& x) {
         return batch_norm2d(x[0], x[1], x[2], Tensor::from_vector<double>({0.3, -0.2, 0.1}, {3}),
                             Tensor::from_vector<double>({0.5, 2.0, 1.5}, {3}), false);
       }},
      {"max_pool2d", {{{2, 2, 4, 5}}},
       [](auto& x) { return max_pool2d(x[0], Pool2dParams::square(2)); }},
      {"max_pool2d_overlap_pad", {{{1, 2, 5, 6}}},
       [](auto& x) { return max_pool2d(x[0], Pool2dParams::square(3, 2, 1)); }},
      {"avg_pool2d", {{{2, 2, 4, 6}}},
       [](auto& x) { return avg_pool2d(x[0], Pool2dParams::square(2)); }},
      {"avg_pool2d_overlap_pad", {{{1, 2, 5, 5}}},
       [](auto& x) { return avg_pool2d(x[0], Pool2dParams::square(3, 2, 1)); }},
      {"global_avg_pool", {{{2, 3, 4, 5}}}, [](auto& x) { return global_avg_pool(x[0]); }},
      {"pad_channels_subsample", {{{2, 3, 5, 5}}},
       [](auto& x) { return pad_channels_subsample(x[0], 5, 2); }},
      {"composite_conv_block", {{{2, 2, 6, 6}}, {{4, 2, 3, 3}}, {{4}}, {{4}}},
       [](auto& x) {
         Tensor h = conv2d(x[0], x[1], Tensor(), Conv2dParams::square(2, 1));
         h = batch_norm2d(h, x[2], x[3], Tensor::zeros({4}, DType::F64),
                          Tensor::full({4}, 1.0, DType::F64), true);
         return global_avg_pool(add(h, pad_channels_subsample(x[0], 4, 2)));
       }},
      {"composite_mlp", {{{3, 4}}, {{5, 4}}, {{5}}, {{2, 5}}},
       [](auto& x) {
         Tensor h = relu(linear(x[0], x[1], x[2]));
         return cross_entropy(linear(h, x[3], Tensor()), labels_for(3, 2));
       }},
  };
}

void PrintTo(const GradCase& c, std::ostream* os) { *os << c.name; }

class OpGradient : public ::testing::TestWithParam<GradCase> {};

// The graph an op records is freed with its output: no node holds a handle that leads back to
// itself (a node holding its own output would leak every training step's graph).
TEST_P(OpGradient, GraphIsFreedWithItsOutput) {
  const GradCase& c = GetParam();
  std::mt19937_64 rng(fresh_seed());
  const int64_t before = live_autograd_nodes();
  {
    std::vector<Tensor> inputs;
    for (const InputSpec& s : c.inputs) {
      inputs.push_back(random_tensor(s.shape, rng, s.lo, s.hi));
      inputs.back().set_requires_grad(true);
    }
    const Tensor y = c.f(inputs);
    EXPECT_GT(live_autograd_nodes(), before) << c.name << " recorded no node";
    sum(mul(y, random_tensor(y.shape(), rng))).backward();
  }
  EXPECT_EQ(live_autograd_nodes(), before) << c.name << " leaks its graph";
}

TEST_P(OpGradient, MatchesFiniteDifferences) {
  const GradCase& c = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<Tensor> inputs;
  for (const InputSpec& s : c.inputs) inputs.push_back(random_tensor(s.shape, rng, s.lo, s.hi));
  check_gradients(c.f, inputs, rng);
}

INSTANTIATE_TEST_SUITE_P(AllOps, OpGradient, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

// ReLU at the points finite differences cannot probe: NaN stays NaN and passes its gradient (a
// diverging activation is not hidden), zeros of either sign give +0 and no gradient; the CUDA
// kernels give the same bits.
TEST(Relu, NanPassesAndZerosOfEitherSignGiveZero) {
  const float nan = std::nanf("");
  for (Device d : {Device::CPU, Device::CUDA}) {
    if (d == Device::CUDA && !cuda_available()) continue;  // the CPU half runs everywhere
    SCOPED_TRACE(device_name(d));
    Tensor x = Tensor::from_vector<float>({nan, -0.0f, 0.0f, -1.0f, 2.0f}, {5}).to(d);
    x.set_requires_grad(true);
    Tensor y = relu(x);
    sum(y).backward();
    const std::vector<float> yv = y.to_vector<float>(), gv = x.grad().to_vector<float>();
    EXPECT_TRUE(std::isnan(yv[0]));
    for (int i = 1; i < 4; ++i) EXPECT_TRUE(yv[i] == 0.0f && !std::signbit(yv[i])) << i;
    EXPECT_EQ(yv[4], 2.0f);
    EXPECT_EQ(gv, (std::vector<float>{1, 0, 0, 0, 1}));
  }
  // An integer tensor is an error naming the op that was called.
  const Tensor i = Tensor::zeros({3}, DType::I64);
  expect_error([&] { relu(i); }, {"relu: expects a floating-point tensor", "I64[3]"});
  expect_error([&] { mul_scalar(i, 2); }, {"mul_scalar:"});
  expect_error([&] { add_scalar(i, 2); }, {"add_scalar:"});
}

// Dropout's backward scales by exactly the forward's factor: with x = 1, the gradient of sum(y)
// is y itself, for rates where 1 / (1 - p) in double and in float round apart (p = 0.021).
TEST(Dropout, BackwardScalesByTheForwardsFactor) {
  for (float p : {0.021f, 0.1f, 0.5f, 0.77f}) {
    for (DType dt : {DType::F32, DType::F64}) {
      SCOPED_TRACE("p " + std::to_string(p) + ", " + dtype_name(dt));
      Tensor x = Tensor::full({1000}, 1.0, dt);
      x.set_requires_grad(true);
      Tensor y = dropout(x, p, 7, 3);
      sum(y).backward();
      EXPECT_EQ(x.grad().to_double_vector(), y.to_double_vector());
    }
  }
}

}  // namespace
}  // namespace tdrop::testing
