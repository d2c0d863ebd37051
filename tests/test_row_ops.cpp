// Row-wise ops on the CPU against hand-worked rows: argmax (ties, NaN, -inf, one column) and
// cross entropy with logits whose exponentials overflow a float; softmax and layer norm over
// enough rows to be split over threads against the same rows one at a time.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "core/parallel.h"
#include "kernels/ops.h"
#include "tests/grad_check.h"

namespace tdrop {
namespace {

// Ties pick the first column; NaN counts as largest so it cannot hide (the first NaN wins);
// an all -inf row has its max at column 0.
TEST(Argmax, TiesNanInfAndOneColumn) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  const std::vector<double> rows = {1,    3,    3,    2,     // tie: the first 3
                                    -inf, -2,   inf,  inf,   // tie at +inf
                                    -inf, -inf, -inf, -inf,  // all -inf
                                    1,    nan,  7,    nan,   // NaN beats the larger 7
                                    nan,  9,    1,    2,     // NaN first
                                    -5,   -5,   -5,   -5};   // all tied
  for (DType dt : {DType::F32, DType::F64}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor x = Tensor::from_vector(rows, {6, 4}).to(dt);
    EXPECT_EQ(argmax(x).to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 0, 1, 0, 0}));
    const Tensor one = Tensor::from_vector<double>({-inf, 4, nan}, {3, 1}).to(dt);
    EXPECT_EQ(argmax(one).to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 0}));
  }
}

// Logits 1e4 apart: exp of any of them overflows a float, yet the loss and gradient are exact.
// Row 0 (label 1): softmax (1, 0, 0), loss 2e4. Row 1 (label 0): softmax (1/2, 1/2, 0), loss
// ln 2. The mean loss is (2e4 + ln 2) / 2 and the gradient (softmax - onehot) / 2.
TEST(CrossEntropy, LargeFloatLogitsGiveTheExactLossAndGradient) {
  Tensor logits = Tensor::from_vector<float>({1e4f, -1e4f, 0, 3e4f, 3e4f, -3e4f}, {2, 3});
  logits.set_requires_grad(true);
  const Tensor loss = cross_entropy(logits, Tensor::from_vector<int64_t>({1, 0}, {2}));
  EXPECT_NEAR(loss.item(), (2e4 + std::log(2.0)) / 2, 1e-3);  // 10000.3466; a float ulp is 1e-3
  loss.backward();
  EXPECT_EQ(logits.grad().to_vector<float>(),
            (std::vector<float>{0.5f, -0.5f, 0.0f, -0.25f, 0.25f, 0.0f}));
  // Row 1 alone, at logits where a float's ulp is 8: the loss is ln 2 to the float, not
  // rounded away against the large maximum.
  for (float big : {3e4f, 1e8f}) {
    const Tensor two = Tensor::from_vector<float>({big, big}, {1, 2});
    EXPECT_EQ(cross_entropy(two, Tensor::from_vector<int64_t>({0}, {1})).item(),
              static_cast<double>(std::log(2.0f)))
        << big;
  }
}

// Float logits whose exp overflows a float (beyond 88.7): the softmax, shifted by the row's
// max, is the double one rounded, as if the logits were small.
TEST(Softmax, FloatLogitsBeyondExpsRangeGiveTheSmallLogitsValues) {
  const std::vector<float> small = {0.0f, 1.5f, 3.0f, -2.0f};
  std::vector<float> large;
  for (float v : small) large.push_back(v + 100.0f);  // exact in float
  const std::vector<float> want = softmax(Tensor::from_vector(small, {1, 4})).to_vector<float>();
  const std::vector<float> got = softmax(Tensor::from_vector(large, {1, 4})).to_vector<float>();
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << i;
    EXPECT_NEAR(got[i], want[i], 1e-6) << i;
  }
}

// The shift is the row's maximum wherever it stands: logits far beyond exp's range in each
// position in turn (and the rest far below it) give a one-hot softmax, not Inf or NaN.
TEST(Softmax, TheLargestLogitInAnyPositionIsTheShift) {
  const int64_t n = 5;
  for (int64_t at = 0; at < n; ++at) {
    std::vector<double> row(n, -1000.0);
    row[static_cast<size_t>(at)] = 1000.0;
    const std::vector<double> y = softmax(Tensor::from_vector(row, {1, n})).to_vector<double>();
    for (int64_t j = 0; j < n; ++j) EXPECT_EQ(y[j], j == at ? 1.0 : 0.0) << at << ", " << j;
  }
}

// Logits given as a strided view (a transposed leaf) get their gradient like contiguous ones.
TEST(CrossEntropy, StridedLogitsGetTheirGradient) {
  Tensor base = Tensor::from_vector<double>({1, -2, 0.5, 3, 0, -1}, {3, 2});
  Tensor strided = base.transpose(0, 1);  // [2, 3]
  strided.set_requires_grad(true);
  Tensor dense = strided.contiguous().detach();
  dense.set_requires_grad(true);
  const Tensor labels = Tensor::from_vector<int64_t>({2, 0}, {2});
  const Tensor a = cross_entropy(strided, labels), b = cross_entropy(dense, labels);
  ASSERT_TRUE(a.requires_grad());
  a.backward();
  b.backward();
  EXPECT_EQ(a.item(), b.item());
  EXPECT_EQ(strided.grad().to_vector<double>(), dense.grad().to_vector<double>());
}

// A row op's output and input gradient for `rows` rows of `n`, computed on the whole tensor (its
// rows split over the CPU threads when there are several) and row by row (one row per call, never
// split): the same bits.
void expect_split_rows_match_single_rows(const std::function<Tensor(const Tensor&)>& op,
                                         int64_t rows, int64_t n) {
  ASSERT_GT(rows * n, 2 * (int64_t{1} << 16)) << "too small to be split";
  std::mt19937_64 rng(testing::fresh_seed());
  const Tensor x = testing::random_tensor({rows, n}, rng, -3, 3, DType::F32);
  const Tensor r = testing::random_tensor({rows, n}, rng, -1, 1, DType::F32);
  auto run = [&](const Tensor& xin, const Tensor& rin) {
    Tensor xv = xin.clone();
    xv.set_requires_grad(true);
    const Tensor y = op(xv);
    sum(mul(y, rin)).backward();
    return std::pair{y.to_vector<float>(), xv.grad().to_vector<float>()};
  };
  const auto [y, gx] = run(x, r);
  for (int64_t row = 0; row < rows; ++row) {
    const auto [y1, gx1] = run(x.narrow(0, row, 1).contiguous(), r.narrow(0, row, 1).contiguous());
    ASSERT_EQ(std::memcmp(y1.data(), y.data() + row * n, sizeof(float) * n), 0) << "row " << row;
    ASSERT_EQ(std::memcmp(gx1.data(), gx.data() + row * n, sizeof(float) * n), 0)
        << "gradient row " << row;
  }
}

TEST(RowOps, SoftmaxOverThreadsEqualsRowByRow) {
  if (cpu_threads() < 2) GTEST_SKIP() << "one CPU thread: rows are never split";
  expect_split_rows_match_single_rows([](const Tensor& x) { return softmax(x); }, 3001, 49);
}

TEST(RowOps, LayerNormOverThreadsEqualsRowByRow) {
  if (cpu_threads() < 2) GTEST_SKIP() << "one CPU thread: rows are never split";
  std::mt19937_64 rng(testing::fresh_seed());
  const Tensor gamma = testing::random_tensor({64}, rng, 0.5, 1.5, DType::F32);
  const Tensor beta = testing::random_tensor({64}, rng, -0.5, 0.5, DType::F32);
  expect_split_rows_match_single_rows(
      [&](const Tensor& x) { return layer_norm(x, gamma, beta); }, 2501, 64);
}

}  // namespace
}  // namespace tdrop
