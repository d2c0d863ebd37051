// Values of the convolutional-network ops on CPU: conv2d against a direct convolution written
// here, batch_norm2d against hand-computed statistics, pooling and the option-A shortcut against
// small worked examples, and the errors for bad shapes. Gradients: tests/test_grad.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <tuple>

#include "kernels/conv_ops.h"
#include "tests/bn_epilogue.h"
#include "tests/expect_error.h"
#include "tests/grad_check.h"

namespace tdrop::testing {
namespace {

// The textbook definition: y[n,o,i,j] = b[o] + sum_{c in o's group, u, v}
//   x[n, c, i*sh - ph + u*dh, j*sw - pw + v*dw] * w[o, c - group start, u, v].
std::vector<double> direct_conv(const Tensor& xt, const Tensor& wt, const Tensor& bt,
                                const Conv2dParams& p, const Shape& ys) {
  const std::vector<double> x = xt.to_double_vector(), w = wt.to_double_vector();
  const std::vector<double> b = bt.defined() ? bt.to_double_vector() : std::vector<double>();
  const int64_t N = xt.size(0), C = xt.size(1), H = xt.size(2), W = xt.size(3);
  const int64_t O = wt.size(0), Cg = wt.size(1), KH = wt.size(2), KW = wt.size(3);
  const int64_t Og = O / p.groups, Ho = ys[2], Wo = ys[3];
  std::vector<double> y(static_cast<size_t>(N * O * Ho * Wo));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < Ho; ++i)
        for (int64_t j = 0; j < Wo; ++j) {
          double acc = b.empty() ? 0.0 : b[o];
          const int64_t c0 = (o / Og) * Cg;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t u = 0; u < KH; ++u)
              for (int64_t v = 0; v < KW; ++v) {
                const int64_t h = i * p.stride_h - p.pad_h + u * p.dilation_h;
                const int64_t ww = j * p.stride_w - p.pad_w + v * p.dilation_w;
                if (h < 0 || h >= H || ww < 0 || ww >= W) continue;
                acc += x[((n * C + c0 + c) * H + h) * W + ww] * w[((o * Cg + c) * KH + u) * KW + v];
              }
          y[((n * O + o) * Ho + i) * Wo + j] = acc;
        }
  (void)C;
  return y;
}

struct ConvCase {
  const char* name;
  Shape x, w;
  Conv2dParams p;
  bool bias;
};
// Test listings show the case's name, not its bytes.
void PrintTo(const ConvCase& c, std::ostream* os) { *os << c.name; }

class Conv2dValues : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Conv2dValues, MatchDirectConvolution) {
  const ConvCase& c = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (DType dt : {DType::F64, DType::F32}) {
    const Tensor x = random_tensor(c.x, rng, -1, 1, dt), w = random_tensor(c.w, rng, -1, 1, dt);
    const Tensor b = c.bias ? random_tensor({c.w[0]}, rng, -1, 1, dt) : Tensor();
    const Tensor y = conv2d(x, w, b, c.p);
    const Shape ys = conv2d_output_shape(c.x, c.w, c.p, "test");
    ASSERT_EQ(y.shape(), ys);
    // One output per window that lies inside the padded input: window i starts at i * stride
    // (padded coordinates) and spans dilation * (k - 1) + 1 pixels.
    const auto windows = [](int64_t in, int64_t pad, int64_t k, int64_t stride, int64_t dil) {
      int64_t count = 0;
      while (count * stride + dil * (k - 1) + 1 <= in + 2 * pad) ++count;
      return count;
    };
    const int64_t ho = windows(c.x[2], c.p.pad_h, c.w[2], c.p.stride_h, c.p.dilation_h);
    const int64_t wo = windows(c.x[3], c.p.pad_w, c.w[3], c.p.stride_w, c.p.dilation_w);
    ASSERT_EQ(ys, (Shape{c.x[0], c.w[0], ho, wo}));
    const std::vector<double> want = direct_conv(x, w, b, c.p, ys), got = y.to_double_vector();
    const double tol = dt == DType::F64 ? 1e-12 : 2e-5;
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << dtype_name(dt) << " at " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Conv2dValues,
    ::testing::Values(
        ConvCase{"plain_3x3", {2, 3, 7, 5}, {4, 3, 3, 3}, {}, true},
        ConvCase{"pad_1", {1, 2, 5, 6}, {3, 2, 3, 3}, Conv2dParams::square(1, 1), false},
        ConvCase{"stride_2_pad_1_odd", {3, 3, 9, 7}, {5, 3, 3, 3}, Conv2dParams::square(2, 1), true},
        ConvCase{"dilation_2", {2, 2, 9, 8}, {3, 2, 3, 3}, Conv2dParams::square(1, 2, 2), true},
        ConvCase{"groups_3", {2, 6, 6, 5}, {9, 2, 3, 3}, Conv2dParams::square(1, 1, 1, 3), true},
        ConvCase{"depthwise", {1, 4, 5, 5}, {4, 1, 3, 3}, Conv2dParams::square(2, 1, 1, 4), false},
        ConvCase{"pointwise_direct", {2, 5, 4, 3}, {7, 5, 1, 1}, {}, true},
        ConvCase{"pointwise_strided", {2, 3, 5, 5}, {4, 3, 1, 1}, Conv2dParams::square(2, 0), false},
        ConvCase{"rect_kernel_mixed", {2, 3, 8, 9}, {2, 3, 2, 4}, {2, 1, 1, 2, 1, 2, 1}, true},
        ConvCase{"kernel_7_stem", {2, 1, 11, 11}, {4, 1, 7, 7}, Conv2dParams::square(1, 3), false},
        ConvCase{"one_by_one_image", {3, 2, 1, 1}, {3, 2, 1, 1}, {}, true},
        // Stride 1 with as many output columns as input ones: each unfolded row is copied as
        // one shifted run of the plane. Here some taps see nothing but padding, a whole row
        // or column of them.
        ConvCase{"same_width_one_column", {2, 3, 2, 1}, {2, 3, 3, 3}, Conv2dParams::square(1, 1),
                 true},
        // Two images per GEMM, then one: the second chunk's unfolded rows land where the first
        // chunk left values, so every padding entry has to be written, not just left.
        ConvCase{"same_width_one_column_chunked", {3, 2, 2048, 1}, {2, 2, 3, 3},
                 Conv2dParams::square(1, 1), true},
        ConvCase{"same_width_dilated", {2, 2, 4, 5}, {3, 2, 3, 3}, Conv2dParams::square(1, 3, 3),
                 false},
        // 40x40 outputs put two images in one GEMM: a chunk of 2, then a chunk of 1.
        ConvCase{"chunked_3x3", {3, 2, 40, 40}, {3, 2, 3, 3}, Conv2dParams::square(1, 1), true},
        ConvCase{"chunked_pointwise", {3, 4, 40, 40}, {5, 4, 1, 1}, {}, false},
        // Large enough that, with two or more CPU threads, the images of a chunk are unfolded
        // (3x3) and the rows of a chunk gathered and scattered (1x1) on several threads.
        ConvCase{"threaded_3x3", {4, 16, 32, 32}, {8, 16, 3, 3}, Conv2dParams::square(1, 1), true},
        ConvCase{"threaded_pointwise", {8, 64, 16, 16}, {64, 64, 1, 1}, {}, false}),
    [](const auto& info) { return std::string(info.param.name); });

// The backward products of a batch equal the per-image ones (stacked for the data gradient,
// summed for the filter and bias gradients), whatever chunks the batch was unfolded in.
TEST(Conv2dBackward, BatchEqualsImageByImage) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const ConvCase& c : {ConvCase{"3x3", {3, 2, 40, 40}, {3, 2, 3, 3}, Conv2dParams::square(1, 1), true},
                            ConvCase{"1x1", {3, 4, 40, 40}, {5, 4, 1, 1}, {}, true},
                            ConvCase{"strided", {5, 3, 9, 9}, {4, 3, 3, 3}, Conv2dParams::square(2, 1), true},
                            ConvCase{"threaded_3x3", {4, 16, 32, 32}, {8, 16, 3, 3},
                                     Conv2dParams::square(1, 1), true},
                            ConvCase{"threaded_1x1", {8, 64, 16, 16}, {64, 64, 1, 1}, {}, true}}) {
    SCOPED_TRACE(c.name);
    auto grads = [&](const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, const Tensor& r) {
      Tensor x = x_in.clone(), w = w_in.clone(), b = b_in.clone();
      for (Tensor* t : {&x, &w, &b}) t->set_requires_grad(true);
      sum(mul(conv2d(x, w, b, c.p), r)).backward();
      return std::vector<Tensor>{x.grad(), w.grad(), b.grad()};
    };
    const Tensor x = random_tensor(c.x, rng), w = random_tensor(c.w, rng);
    const Tensor b = random_tensor({c.w[0]}, rng);
    const Tensor r = random_tensor(conv2d_output_shape(c.x, c.w, c.p, "test"), rng);
    const std::vector<Tensor> whole = grads(x, w, b, r);
    std::vector<double> gx, gw(static_cast<size_t>(w.numel())), gb(static_cast<size_t>(b.numel()));
    for (int64_t n = 0; n < c.x[0]; ++n) {
      const std::vector<Tensor> one = grads(x.narrow(0, n, 1).contiguous(), w, b,
                                            r.narrow(0, n, 1).contiguous());
      const std::vector<double> ox = one[0].to_double_vector(), ow = one[1].to_double_vector(),
                                ob = one[2].to_double_vector();
      gx.insert(gx.end(), ox.begin(), ox.end());
      for (size_t i = 0; i < gw.size(); ++i) gw[i] += ow[i];
      for (size_t i = 0; i < gb.size(); ++i) gb[i] += ob[i];
    }
    for (auto [got, want] : {std::pair{whole[0].to_double_vector(), gx},
                             std::pair{whole[1].to_double_vector(), gw},
                             std::pair{whole[2].to_double_vector(), gb}}) {
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-11) << i;
    }
  }
}

TEST(Conv2dErrors, NameTheOpAndShapes) {
  const Tensor x = Tensor::zeros({2, 3, 8, 8});
  std::string m = error_message([&] { conv2d(x, Tensor::zeros({4, 2, 3, 3}), Tensor()); });
  EXPECT_NE(m.find("conv2d"), std::string::npos) << m;
  EXPECT_NE(m.find("[2, 3, 8, 8]"), std::string::npos) << m;
  EXPECT_NE(m.find("[4, 2, 3, 3]"), std::string::npos) << m;
  m = error_message([&] { conv2d(x, Tensor::zeros({4, 3, 9, 9}), Tensor()); });
  EXPECT_NE(m.find("does not fit"), std::string::npos) << m;
  m = error_message([&] { conv2d(x, Tensor::zeros({4, 3, 3, 3}), Tensor::zeros({5})); });
  EXPECT_NE(m.find("bias"), std::string::npos) << m;
  m = error_message([&] { conv2d(Tensor::zeros({3, 8, 8}), Tensor::zeros({4, 3, 3, 3}), Tensor()); });
  EXPECT_NE(m.find("[N, C, H, W]"), std::string::npos) << m;
  m = error_message([&] {
    conv2d(x, Tensor::zeros({4, 3, 3, 3}, DType::F64), Tensor());
  });
  EXPECT_NE(m.find("dtype"), std::string::npos) << m;
  // 3 channels do not split into 2 groups.
  expect_error(
      [&] { conv2d(x, Tensor::zeros({4, 1, 3, 3}), Tensor(), Conv2dParams::square(1, 0, 1, 2)); },
      {"conv2d", "[2, 3, 8, 8]", "do not fit 2 group(s)"});
}

// ---- batch_norm2d --------------------------------------------------------------------------

TEST(BatchNorm2d, TrainingNormalisesWithBatchStatisticsAndUpdatesRunningOnes) {
  // Two images, two channels, 1x2 pixels. Channel 0 holds 1, 2, 3, 6 (mean 3, biased var 3.5,
  // unbiased 14/3); channel 1 holds -1, -1, 1, 1 (mean 0, var 1, unbiased 4/3).
  const Tensor x = Tensor::from_vector<double>({1, 2, -1, 1, 3, 6, -1, 1}, {2, 2, 1, 2});
  const Tensor gamma = Tensor::from_vector<double>({2.0, 0.5}, {2});
  const Tensor beta = Tensor::from_vector<double>({0.25, -1.0}, {2});
  Tensor rm = Tensor::from_vector<double>({1.0, 2.0}, {2});
  Tensor rv = Tensor::from_vector<double>({1.0, 3.0}, {2});
  const double eps = 1e-5, mom = 0.1;
  const Tensor y = batch_norm2d(x, gamma, beta, rm, rv, /*training=*/true, mom, eps);
  const double s0 = 1 / std::sqrt(3.5 + eps), s1 = 1 / std::sqrt(1.0 + eps);
  const std::vector<double> want = {
      2 * (1 - 3) * s0 + 0.25,  2 * (2 - 3) * s0 + 0.25,  0.5 * -1 * s1 - 1, 0.5 * 1 * s1 - 1,
      2 * (3 - 3) * s0 + 0.25,  2 * (6 - 3) * s0 + 0.25,  0.5 * -1 * s1 - 1, 0.5 * 1 * s1 - 1};
  const std::vector<double> got = y.to_double_vector();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12) << i;
  const std::vector<double> m = rm.to_double_vector(), v = rv.to_double_vector();
  EXPECT_NEAR(m[0], 0.9 * 1.0 + 0.1 * 3.0, 1e-12);
  EXPECT_NEAR(m[1], 0.9 * 2.0 + 0.1 * 0.0, 1e-12);
  EXPECT_NEAR(v[0], 0.9 * 1.0 + 0.1 * 14.0 / 3.0, 1e-12);
  EXPECT_NEAR(v[1], 0.9 * 3.0 + 0.1 * 4.0 / 3.0, 1e-12);
}

TEST(BatchNorm2d, EvaluationUsesRunningStatisticsAndLeavesThem) {
  const Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {1, 2, 3, 1});
  const Tensor gamma = Tensor::from_vector<float>({1.5f, -1.0f}, {2});
  const Tensor beta = Tensor::from_vector<float>({0.5f, 2.0f}, {2});
  Tensor rm = Tensor::from_vector<float>({2.0f, 4.0f}, {2});
  Tensor rv = Tensor::from_vector<float>({4.0f, 0.25f}, {2});
  const Tensor y = batch_norm2d(x, gamma, beta, rm, rv, /*training=*/false, 0.1, 1e-5);
  const double s0 = 1 / std::sqrt(4.0 + 1e-5), s1 = 1 / std::sqrt(0.25 + 1e-5);
  const std::vector<double> want = {1.5 * (1 - 2) * s0 + 0.5, 1.5 * 0 * s0 + 0.5,
                                    1.5 * (3 - 2) * s0 + 0.5, -(4 - 4) * s1 + 2,
                                    -(5 - 4) * s1 + 2,        -(6 - 4) * s1 + 2};
  const std::vector<double> got = y.to_double_vector();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << i;
  EXPECT_EQ(rm.to_vector<float>(), (std::vector<float>{2.0f, 4.0f}));
  EXPECT_EQ(rv.to_vector<float>(), (std::vector<float>{4.0f, 0.25f}));
}

TEST(BatchNorm2d, TrainingOutputHasZeroMeanUnitVariancePerChannel) {
  std::mt19937_64 rng(fresh_seed());
  const Tensor x = random_tensor({5, 3, 4, 7}, rng, -3, 5, DType::F32);
  Tensor rm = Tensor::zeros({3}), rv = Tensor::full({3}, 1.0);
  const Tensor y = batch_norm2d(x, Tensor::full({3}, 1.0), Tensor::zeros({3}), rm, rv, true);
  const std::vector<double> v = y.to_double_vector();
  for (int64_t c = 0; c < 3; ++c) {
    double s = 0, s2 = 0;
    for (int64_t n = 0; n < 5; ++n)
      for (int64_t i = 0; i < 28; ++i) {
        const double e = v[(n * 3 + c) * 28 + i];
        s += e, s2 += e * e;
      }
    EXPECT_NEAR(s / 140, 0.0, 1e-5);
    EXPECT_NEAR(s2 / 140, 1.0, 1e-3);  // var / (var + eps)
  }
}

TEST(BatchNorm2d, RejectsBadInputs) {
  Tensor rm = Tensor::zeros({2}), rv = Tensor::full({2}, 1.0);
  const Tensor g = Tensor::full({2}, 1.0), b = Tensor::zeros({2});
  std::string m = error_message([&] { batch_norm2d(Tensor::zeros({1, 2, 1, 1}), g, b, rm, rv, true); });
  EXPECT_NE(m.find("more than one value per channel"), std::string::npos) << m;
  m = error_message([&] { batch_norm2d(Tensor::zeros({4, 3, 2, 2}), g, b, rm, rv, true); });
  EXPECT_NE(m.find("batch_norm2d"), std::string::npos) << m;
  EXPECT_NE(m.find("3 channels"), std::string::npos) << m;
  // One value per channel is fine in evaluation.
  EXPECT_NO_THROW(batch_norm2d(Tensor::zeros({1, 2, 1, 1}), g, b, rm, rv, false));
}

// The fused epilogue (relu(bn(x) + residual) in batch norm's output pass) gives the bits of the
// composed ops: outputs, all input gradients and the running statistics; also with a residual
// off a 16-byte boundary.
TEST(BatchNorm2d, FusedEpilogueEqualsComposedOpsBitForBit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (DType dt : {DType::F32, DType::F64})
    for (bool training : {true, false})
      for (auto [residual, relu, offset] :
           {std::tuple{true, true, false}, std::tuple{false, true, false},
            std::tuple{true, false, false}, std::tuple{true, true, true}}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + (training ? " training" : " eval") +
                     (residual ? " +residual" : "") + (relu ? " relu" : "") +
                     (offset ? ", residual off 16-byte alignment" : ""));
        const BnEpilogueRun r = run_bn_epilogue({3, 4, 5, 6}, dt, Device::CPU, training, residual,
                                                relu, rng, offset);
        ASSERT_EQ(r.fused.size(), r.composed.size());
        for (size_t i = 0; i < r.fused.size(); ++i)
          EXPECT_EQ(r.fused[i].to_double_vector(), r.composed[i].to_double_vector()) << "item " << i;
      }
}

TEST(BatchNorm2d, RejectsAResidualOfAnotherShape) {
  Tensor rm = Tensor::zeros({2}), rv = Tensor::full({2}, 1.0);
  const Tensor g = Tensor::full({2}, 1.0), b = Tensor::zeros({2});
  const std::string m = error_message([&] {
    batch_norm2d(Tensor::zeros({2, 2, 3, 3}), g, b, rm, rv, true, 0.1, 1e-5,
                 BnEpilogue{Tensor::zeros({2, 2, 3, 4}), true});
  });
  EXPECT_NE(m.find("residual"), std::string::npos) << m;
  EXPECT_NE(m.find("[2, 2, 3, 4]"), std::string::npos) << m;
}

// ---- pooling -------------------------------------------------------------------------------

Tensor iota_image(int64_t h, int64_t w) {
  std::vector<float> v(static_cast<size_t>(h * w));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  return Tensor::from_vector(v, {1, 1, h, w});
}

TEST(Pooling, MaxPoolPicksWindowMaximaAndRoutesGradientsToThem) {
  // 4x5 plane; 2x2 windows, stride 2: the last column is dropped (floor).
  Tensor x = Tensor::from_vector<double>({3, 1, 0, 7, 9,  //
                                          2, 2, 5, 5, 9,  //
                                          -1, 4, 8, 0, 9,  //
                                          6, 4, 1, 8, 9},
                                         {1, 1, 4, 5});
  x.set_requires_grad(true);
  const Tensor y = max_pool2d(x, Pool2dParams::square(2));
  ASSERT_EQ(y.shape(), (Shape{1, 1, 2, 2}));
  EXPECT_EQ(y.to_double_vector(), (std::vector<double>{3, 7, 6, 8}));
  y.backward(Tensor::from_vector<double>({10, 20, 30, 40}, {1, 1, 2, 2}));
  // The two 8s of the last window tie: the first in row-major order takes the gradient.
  const std::vector<double> want = {10, 0, 0, 20, 0,  //
                                    0,  0, 0, 0,  0,  //
                                    0,  0, 40, 0, 0,  //
                                    30, 0, 0, 0,  0};
  EXPECT_EQ(x.grad().to_double_vector(), want);
}

TEST(Pooling, OverlappingPaddedMaxPoolAddsGradientsOfSharedMaxima) {
  Tensor x = iota_image(3, 3).to(DType::F64);
  x.set_requires_grad(true);
  // 3x3 windows, stride 1, padding 1 over 0..8: overlapping windows share their maxima.
  const Tensor y = max_pool2d(x, Pool2dParams::square(3, 1, 1));
  EXPECT_EQ(y.to_double_vector(), (std::vector<double>{4, 5, 5, 7, 8, 8, 7, 8, 8}));
  y.backward(Tensor::full({1, 1, 3, 3}, 1.0, DType::F64));
  EXPECT_EQ(x.grad().to_double_vector(), (std::vector<double>{0, 0, 0, 0, 1, 2, 0, 2, 4}));
}

TEST(Pooling, AvgPoolCountsPaddingAsZeros) {
  Tensor x = iota_image(3, 4).to(DType::F64);
  x.set_requires_grad(true);
  const Tensor y = avg_pool2d(x, Pool2dParams::square(2, 2, 1));  // 2x2, stride 2, pad 1
  ASSERT_EQ(y.shape(), (Shape{1, 1, 2, 3}));
  // Windows over rows {-1,0} and {1,2}, columns {-1,0}, {1,2}, {3,4}; every divisor is 4.
  const std::vector<double> want = {0 / 4.0, (1 + 2) / 4.0, 3 / 4.0,
                                    (4 + 8) / 4.0, (5 + 6 + 9 + 10) / 4.0, (7 + 11) / 4.0};
  const std::vector<double> got = y.to_double_vector();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_DOUBLE_EQ(got[i], want[i]) << i;
  y.backward(Tensor::full({1, 1, 2, 3}, 1.0, DType::F64));
  for (double g : x.grad().to_double_vector()) EXPECT_DOUBLE_EQ(g, 0.25);  // each pixel once
}

TEST(Pooling, GlobalAvgPoolAveragesEachPlane) {
  std::mt19937_64 rng(fresh_seed());
  Tensor x = random_tensor({3, 4, 5, 7}, rng);
  x.set_requires_grad(true);
  const Tensor y = global_avg_pool(x);
  ASSERT_EQ(y.shape(), (Shape{3, 4}));
  const std::vector<double> xv = x.to_double_vector(), yv = y.to_double_vector();
  for (int64_t p = 0; p < 12; ++p) {
    double s = 0;
    for (int64_t i = 0; i < 35; ++i) s += xv[p * 35 + i];
    EXPECT_NEAR(yv[p], s / 35, 1e-14);
  }
  y.backward(Tensor::full({3, 4}, 7.0, DType::F64));
  for (double g : x.grad().to_double_vector()) EXPECT_DOUBLE_EQ(g, 7.0 / 35);
}

TEST(Pooling, RejectsBadWindows) {
  const Tensor x = Tensor::zeros({1, 1, 4, 4});
  std::string m = error_message([&] { max_pool2d(x, Pool2dParams::square(2, 2, 2)); });
  EXPECT_NE(m.find("max_pool2d"), std::string::npos) << m;
  EXPECT_NE(m.find("half the window"), std::string::npos) << m;
  m = error_message([&] { avg_pool2d(x, Pool2dParams::square(5)); });
  EXPECT_NE(m.find("does not fit"), std::string::npos) << m;
  expect_error([] { global_avg_pool(Tensor::zeros({2, 3})); },
               {"global_avg_pool", "[2, 3]", "is not [N, C, H, W]"});
  // No pixels, though padding would make the window fit: refused, not an empty window.
  for (const Shape& empty : {Shape{1, 1, 0, 3}, Shape{1, 1, 3, 0}}) {
    expect_error([&] { max_pool2d(Tensor::zeros(empty), Pool2dParams::square(2, 2, 1)); },
                 {"max_pool2d", shape_str(empty), "no pixels"});
    expect_error([&] { avg_pool2d(Tensor::zeros(empty), Pool2dParams::square(2, 2, 1)); },
                 {"avg_pool2d", "no pixels"});
  }
}

// ---- option-A shortcut ---------------------------------------------------------------------

TEST(PadChannelsSubsample, SamplesEveryStrideThPixelAndAppendsZeroChannels) {
  Tensor x = Tensor::zeros({2, 2, 5, 5}, DType::F64);
  {
    double* p = x.data<double>();
    for (int64_t i = 0; i < x.numel(); ++i) p[i] = static_cast<double>(i);
  }
  x.set_requires_grad(true);
  const Tensor y = pad_channels_subsample(x, 4, 2);
  ASSERT_EQ(y.shape(), (Shape{2, 4, 3, 3}));
  const std::vector<double> v = y.to_double_vector();
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 4; ++c)
      for (int64_t i = 0; i < 3; ++i)
        for (int64_t j = 0; j < 3; ++j) {
          const double want = c < 2 ? static_cast<double>(((n * 2 + c) * 5 + 2 * i) * 5 + 2 * j) : 0;
          EXPECT_EQ(v[((n * 4 + c) * 3 + i) * 3 + j], want);
        }
  y.backward(Tensor::full({2, 4, 3, 3}, 1.0, DType::F64));
  const std::vector<double> g = x.grad().to_double_vector();
  for (int64_t k = 0; k < x.numel(); ++k) {
    const int64_t i = (k / 5) % 5, j = k % 5;
    EXPECT_EQ(g[k], (i % 2 == 0 && j % 2 == 0) ? 1.0 : 0.0) << k;
  }
  expect_error([&] { pad_channels_subsample(x, 1, 2); },  // fewer channels than the input
               {"pad_channels_subsample", "cannot become 1 channels", "need out_channels >= "});
}

}  // namespace
}  // namespace tdrop::testing
