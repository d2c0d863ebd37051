// The autograd engine itself (the per-op gradients are in test_grad.cpp): accumulation when a
// tensor feeds several consumers or several backward calls, the no-grad guard, seeds, deep graphs
// (the engine is iterative), branches without gradients, and detach().
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "kernels/ops.h"
#include "tests/expect_error.h"
#include "tests/grad_check.h"

namespace tdrop {
namespace {

using testing::fresh_seed;
using testing::random_tensor;

using testing::expect_error;

void expect_all_near(const std::vector<double>& got, const std::vector<double>& want,
                     double tol = 1e-12) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << "element " << i;
}

Tensor leaf(const Shape& shape, std::mt19937_64& rng) {
  Tensor t = random_tensor(shape, rng);
  t.set_requires_grad(true);
  return t;
}

TEST(Autograd, TensorUsedTwiceAccumulates) {  // d/dx sum(x*x + x) = 2x + 1
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Tensor x = leaf({3, 4}, rng);
  Tensor loss = sum(add(mul(x, x), x));
  loss.backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().shape(), x.shape());
  std::vector<double> want;
  for (double v : x.to_double_vector()) want.push_back(2 * v + 1);
  expect_all_near(x.grad().to_double_vector(), want);
}

TEST(Autograd, IntermediateUsedTwiceWaitsForAllConsumers) {
  // h = 3x feeds mul(h, h) and add(., h), on paths of different depth:
  // d/dx sum(h*h + h) = 3 (2h + 1) = 18x + 3.
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Tensor x = leaf({5}, rng);
  Tensor h = mul_scalar(x, 3.0);
  Tensor deep = relu(add_scalar(mul(h, h), 1.0));  // h*h + 1 > 0: relu is the identity here
  Tensor loss = sum(add(deep, h));
  loss.backward();
  std::vector<double> want;
  for (double v : x.to_double_vector()) want.push_back(18 * v + 3);
  expect_all_near(x.grad().to_double_vector(), want);
  EXPECT_FALSE(h.grad().defined()) << "non-leaf tensors do not keep a .grad";
}

// add() hands one gradient tensor to both of its inputs, and the engine passes gradients on
// without copying them; a second contribution to one input must not write through to the other.
TEST(Autograd, GradientSharedByTwoInputsIsNotWrittenThrough) {
  // a = 2x and b = 3x meet in add(a, b), and each also feeds a product:
  // d/dx sum(a*c + b*d + (a + b)) = 2 (1 + c) + 3 (1 + d). In both operand orders of the
  // outer add, so that whatever order the engine visits nodes in, one input gets its second
  // contribution while the other still waits on the tensor they share.
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (bool shared_last : {true, false}) {
    SCOPED_TRACE(shared_last ? "products first" : "sum first");
    Tensor x = leaf({7}, rng);
    const Tensor c = random_tensor({7}, rng), d = random_tensor({7}, rng);
    const Tensor a = mul_scalar(x, 2.0), b = mul_scalar(x, 3.0);
    const Tensor shared = add(a, b), products = add(mul(a, c), mul(b, d));
    sum(shared_last ? add(products, shared) : add(shared, products)).backward();
    std::vector<double> want;
    const std::vector<double> cv = c.to_double_vector(), dv = d.to_double_vector();
    for (size_t i = 0; i < cv.size(); ++i) want.push_back(2 * (1 + cv[i]) + 3 * (1 + dv[i]));
    expect_all_near(x.grad().to_double_vector(), want);
  }
}

TEST(Autograd, TwoBackwardCallsAccumulateIntoGrad) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Tensor x = leaf({6}, rng);
  Tensor c = random_tensor({6}, rng);
  sum(mul(x, c)).backward();
  const std::vector<double> first = x.grad().to_double_vector();
  expect_all_near(first, c.to_double_vector());
  sum(mul_scalar(mul(x, c), 2.0)).backward();  // a second, fresh graph
  std::vector<double> want;
  for (double v : c.to_double_vector()) want.push_back(3 * v);
  expect_all_near(x.grad().to_double_vector(), want);
  // Clearing the gradient starts over.
  x.set_grad(Tensor());
  sum(x).backward();
  expect_all_near(x.grad().to_double_vector(), std::vector<double>(6, 1.0));
}

TEST(Autograd, NoGradGuardRecordsNothing) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Tensor x = leaf({4}, rng);
  EXPECT_TRUE(grad_enabled());
  {
    NoGradGuard outer;
    EXPECT_FALSE(grad_enabled());
    {
      NoGradGuard inner;
      EXPECT_FALSE(grad_enabled());
    }
    EXPECT_FALSE(grad_enabled()) << "leaving an inner guard must not re-enable recording";
    Tensor y = relu(mul(x, x));
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(y.grad_fn(), nullptr);
    EXPECT_FALSE(any_requires_grad({&x}));
    expect_error([&] { sum(y).backward(); }, {"backward", "does not require a gradient"});
    // The values are still computed.
    std::vector<double> want;
    for (double v : x.to_double_vector()) want.push_back(v * v);
    expect_all_near(y.to_double_vector(), want);
  }
  EXPECT_TRUE(grad_enabled());
  EXPECT_TRUE(any_requires_grad({&x}));
  Tensor z = mul(x, x);
  EXPECT_TRUE(z.requires_grad());
  EXPECT_NE(z.grad_fn(), nullptr);
  EXPECT_FALSE(x.grad().defined());
}

// A node may return no gradient for an input (its contract allows it): nothing flows through
// that path, but the nodes below it still run for the gradient their other consumers send.
struct NoGradientNode : Node {
  const char* name() const override { return "no_gradient"; }
  std::vector<Tensor> backward(const Tensor&) override { return {Tensor()}; }
};

TEST(Autograd, APathWithoutAGradientLeavesTheOtherPathsGradient) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Tensor x = leaf({2, 3}, rng);
  Tensor h = mul_scalar(x, 2.0);  // h feeds both paths
  Tensor p = record(h.detach().clone(), std::make_shared<NoGradientNode>(), {mul_scalar(h, 3.0)});
  sum(add(p, h)).backward();
  ASSERT_TRUE(x.grad().defined()) << "the gradient through h was dropped";
  expect_all_near(x.grad().to_double_vector(), std::vector<double>(6, 2.0));
}

TEST(Autograd, AnOpsOutputCannotBeToldToNeedNoGradient) {
  std::mt19937_64 rng(fresh_seed());
  Tensor x = leaf({2}, rng);
  Tensor y = mul_scalar(x, 2.0);
  expect_error([&] { y.set_requires_grad(false); }, {"set_requires_grad(false)", "detach()"});
  EXPECT_FALSE(y.detach().requires_grad());
}

TEST(Autograd, NonScalarNeedsASeed) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Tensor x = leaf({2, 3}, rng);
  Tensor y = mul(x, x);
  expect_error([&] { y.backward(); }, {"backward", "F64[2, 3]", "not a scalar", "seed"});
  EXPECT_FALSE(x.grad().defined());
  expect_error([&] { y.backward(Tensor::zeros({3, 2}, DType::F64)); },
               {"backward", "seed", "[3, 2]", "[2, 3]"});
  // A seed of another dtype would leave a gradient of that dtype on x.
  expect_error([&] { y.backward(Tensor::zeros({2, 3}, DType::F32)); },
               {"backward", "seed F32[2, 3]", "F64[2, 3]"});
  EXPECT_FALSE(x.grad().defined());
  // With a seed: grad = seed * 2x.
  Tensor s = random_tensor({2, 3}, rng);
  y.backward(s);
  const std::vector<double> xv = x.to_double_vector(), sv = s.to_double_vector();
  std::vector<double> want;
  for (size_t i = 0; i < xv.size(); ++i) want.push_back(sv[i] * 2 * xv[i]);
  expect_all_near(x.grad().to_double_vector(), want);
}

TEST(Autograd, BackwardOnATensorWithoutGradIsAnError) {
  Tensor c = Tensor::full({1}, 2.0, DType::F64);
  expect_error([&] { c.backward(); }, {"does not require a gradient"});
  expect_error([] { Tensor::zeros({2}, DType::I64).set_requires_grad(true); },
               {"floating-point", "I64[2]"});
}

TEST(Autograd, BackwardOnALeafSetsItsSeed) {
  Tensor x = Tensor::full({1}, 5.0, DType::F64);
  x.set_requires_grad(true);
  x.backward();
  EXPECT_EQ(x.grad().item(), 1.0);
  x.backward(Tensor::full({1}, 2.5, DType::F64));
  EXPECT_EQ(x.grad().item(), 3.5);
}

TEST(Autograd, DeepChainRunsIterativelyWithTheRightGradient) {
  // 300000 chained ops: a recursive backward, or a recursive teardown of the graph (nested
  // shared_ptr destructors), would overflow the stack; both are iterative.
  // y = x * s^N with s = 1 + 1e-6, so dy/dx = s^N.
  constexpr int kDepth = 300000;
  const double s = 1.0 + 1e-6;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Tensor x = leaf({3}, rng);
  {
    Tensor h = x;
    for (int i = 0; i < kDepth; ++i) h = mul_scalar(h, s);
    Tensor loss = sum(h);
    loss.backward();
    std::vector<double> want_y;
    for (double v : x.to_double_vector()) want_y.push_back(v * std::pow(s, kDepth));
    expect_all_near(h.to_double_vector(), want_y, 1e-9);
  }  // the graph is torn down here
  const double want = std::pow(s, kDepth);  // about 1.35
  expect_all_near(x.grad().to_double_vector(), std::vector<double>(3, want), 1e-9);
}

TEST(Autograd, BranchesThatDoNotRequireGradGetNone) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Tensor x = leaf({4, 3}, rng);
  Tensor w = leaf({2, 3}, rng);
  Tensor c = random_tensor({4, 3}, rng);  // a constant: no gradient
  Tensor frozen = random_tensor({2}, rng);  // a bias that does not train
  Tensor cc = mul_scalar(c, 2.0);           // a whole branch of constants
  EXPECT_FALSE(cc.requires_grad());
  EXPECT_EQ(cc.grad_fn(), nullptr);
  Tensor loss = sum(linear(mul(x, cc), w, frozen));
  loss.backward();
  EXPECT_FALSE(c.grad().defined());
  EXPECT_FALSE(cc.grad().defined());
  EXPECT_FALSE(frozen.grad().defined());
  ASSERT_TRUE(x.grad().defined());
  ASSERT_TRUE(w.grad().defined());
  // d/dx sum((x*cc) W^T) [i, k] = cc[i, k] * sum_j W[j, k].
  const std::vector<double> wv = w.to_double_vector(), cv = cc.to_double_vector();
  std::vector<double> want_x;
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t k = 0; k < 3; ++k) want_x.push_back(cv[i * 3 + k] * (wv[k] + wv[3 + k]));
  expect_all_near(x.grad().to_double_vector(), want_x);
}

TEST(Autograd, DetachSharesDataAndStopsGradients) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Tensor x = leaf({5}, rng);
  Tensor h = mul_scalar(x, 2.0);
  Tensor d = h.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_EQ(d.grad_fn(), nullptr);
  EXPECT_EQ(d.storage(), h.storage());
  EXPECT_TRUE(h.requires_grad()) << "detach must not change the original";
  EXPECT_NE(h.grad_fn(), nullptr);
  // loss = sum(x * detach(2x)): the gradient treats the detached factor as a constant, 2x
  // (not 4x as it would without detach).
  sum(mul(x, d)).backward();
  const std::vector<double> xv = x.to_double_vector();
  std::vector<double> want;
  for (double v : xv) want.push_back(2 * v);
  expect_all_near(x.grad().to_double_vector(), want);
  // Detaching a leaf shares its storage too.
  Tensor xd = x.detach();
  EXPECT_EQ(xd.storage(), x.storage());
  EXPECT_FALSE(xd.requires_grad());
  EXPECT_FALSE(xd.grad().defined());
}

// A node that returns the gradients it is given, whatever its inputs need, and keeps the
// gradient it received: with it the engine's own contract is tested, not the ops' manners.
struct FixedGradNode : Node {
  std::vector<Tensor> grads;
  Tensor received;
  const char* name() const override { return "fixed_grad"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    received = g;
    return grads;
  }
};

// An output of `shape` recorded with a FixedGradNode over `inputs`.
Tensor fixed_grad_op(std::vector<Tensor> inputs, std::vector<Tensor> grads, const Shape& shape,
                     std::shared_ptr<FixedGradNode>* node_out = nullptr) {
  auto node = std::make_shared<FixedGradNode>();
  node->grads = std::move(grads);
  if (node_out) *node_out = node;
  return record(Tensor::zeros(shape, DType::F64), node, std::move(inputs));
}

Tensor f64(std::vector<double> v, const Shape& shape) { return Tensor::from_vector(v, shape); }

// A gradient a node returns for an input that needs none (a constant, not a leaf that trains)
// is dropped, not stored in that input's .grad.
TEST(Autograd, GradientsForInputsThatNeedNoneAreDropped) {
  Tensor x = f64({1, 2}, {2});
  x.set_requires_grad(true);
  const Tensor c = f64({3, 4}, {2});
  fixed_grad_op({x, c}, {f64({5, 6}, {2}), f64({7, 8}, {2})}, {}).backward();
  EXPECT_EQ(x.grad().to_double_vector(), (std::vector<double>{5, 6}));
  EXPECT_FALSE(c.grad().defined());
}

// A node that returns a gradient of the wrong shape is named at once, on a single path (the
// gradient would reach the next node as garbage) as on a path that accumulates, and for a leaf.
TEST(Autograd, AGradientOfTheWrongShapeNamesTheNode) {
  Tensor x = f64({1, 2, 3}, {3});
  x.set_requires_grad(true);
  const Tensor h = mul_scalar(x, 2.0);
  expect_error([&] { fixed_grad_op({h}, {f64({1, 2}, {2})}, {}).backward(); },
               {"fixed_grad returned for its input 0", "shape [2]", "input has shape [3]"});
  expect_error(
      [&] {
        const Tensor a = fixed_grad_op({h}, {f64({1, 1, 1}, {3})}, {});
        const Tensor b = fixed_grad_op({x, h}, {f64({1, 1, 1}, {3}), f64({1}, {1})}, {});
        add(a, b).backward();
      },
      {"fixed_grad returned for its input 1", "shape [1]", "input has shape [3]"});
  expect_error([&] { fixed_grad_op({x}, {f64({1, 2, 3, 4}, {2, 2})}, {}).backward(); },
               {"fixed_grad returned for its input 0", "shape [2, 2]"});
  // A .grad set by hand to another shape cannot take a gradient either.
  x.set_grad(f64({0, 0}, {2}));
  expect_error([&] { sum(x).backward(); }, {"leaf's .grad has shape [2]", "shape [3]"});
}

// A strided gradient (a view a node returns) reaches the next node contiguous, in logical order.
TEST(Autograd, NodesReceiveContiguousGradients) {
  Tensor x = f64({1, 2, 3, 4, 5, 6}, {3, 2});
  x.set_requires_grad(true);
  std::shared_ptr<FixedGradNode> probe;
  const Tensor h = fixed_grad_op({x}, {f64({0, 0, 0, 0, 0, 0}, {3, 2})}, {3, 2}, &probe);
  const Tensor g = f64({1, 2, 3, 4, 5, 6}, {2, 3}).transpose(0, 1);  // [3, 2], strided
  ASSERT_FALSE(g.is_contiguous());
  fixed_grad_op({h}, {g}, {}).backward();
  ASSERT_TRUE(probe->received.defined());
  EXPECT_TRUE(probe->received.is_contiguous());
  EXPECT_EQ(probe->received.to_double_vector(), (std::vector<double>{1, 4, 2, 5, 3, 6}));
}

// A leaf's .grad is its own tensor: add() hands one gradient to both of its inputs and the seed
// is the caller's, yet a later backward that accumulates into one .grad changes nothing else.
TEST(Autograd, LeafGradientsShareNoStorage) {
  Tensor x = f64({1, 2}, {2}), z = f64({3, 4}, {2});
  x.set_requires_grad(true);
  z.set_requires_grad(true);
  for (int i = 0; i < 2; ++i) sum(add(x, z)).backward();
  EXPECT_EQ(x.grad().to_double_vector(), (std::vector<double>{2, 2}));
  EXPECT_EQ(z.grad().to_double_vector(), (std::vector<double>{2, 2}));
  EXPECT_NE(x.grad().storage(), z.grad().storage());
  const Tensor seed = f64({0.5, 0.25}, {2});
  Tensor w = f64({1, 1}, {2});
  w.set_requires_grad(true);
  w.backward(seed);
  w.backward(seed);
  EXPECT_EQ(w.grad().to_double_vector(), (std::vector<double>{1, 0.5}));
  EXPECT_EQ(seed.to_double_vector(), (std::vector<double>{0.5, 0.25}));
}

TEST(Autograd, BroadcastGradientsAreReducedToTheInputShape) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Tensor a = leaf({3, 4}, rng);
  Tensor b = leaf({4}, rng);
  Tensor col = leaf({3, 1}, rng);
  Tensor s = random_tensor({3, 4}, rng);
  add(add(a, b), col).backward(s);
  EXPECT_EQ(a.grad().shape(), (Shape{3, 4}));
  EXPECT_EQ(b.grad().shape(), (Shape{4}));
  EXPECT_EQ(col.grad().shape(), (Shape{3, 1}));
  const std::vector<double> sv = s.to_double_vector();
  std::vector<double> want_b(4, 0.0), want_col(3, 0.0);
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 4; ++j) {
      want_b[j] += sv[i * 4 + j];
      want_col[i] += sv[i * 4 + j];
    }
  expect_all_near(a.grad().to_double_vector(), sv);
  expect_all_near(b.grad().to_double_vector(), want_b);
  expect_all_near(col.grad().to_double_vector(), want_col);
}

TEST(Autograd, FloatGradientsMatchDoubleOnes) {
  // The F32 path of the engine (what training uses) agrees with the F64 one.
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Tensor x64 = leaf({8, 5}, rng), w64 = leaf({3, 5}, rng);
  Tensor x32 = x64.to(DType::F32).clone(), w32 = w64.to(DType::F32).clone();
  x32.set_requires_grad(true);
  w32.set_requires_grad(true);
  const Tensor labels = Tensor::from_vector<int64_t>({0, 1, 2, 0, 1, 2, 0, 1}, {8});
  cross_entropy(linear(relu(x64), w64, Tensor()), labels).backward();
  cross_entropy(linear(relu(x32), w32, Tensor()), labels).backward();
  EXPECT_EQ(x32.grad().dtype(), DType::F32);
  for (auto [g32, g64, what] : {std::tuple{&w32, &w64, "w"}, std::tuple{&x32, &x64, "x"}}) {
    const std::vector<double> a = g32->grad().to_double_vector(), b = g64->grad().to_double_vector();
    ASSERT_EQ(a.size(), b.size()) << what;
    for (size_t i = 0; i < b.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6) << what << " " << i;
  }
}

// The training loop asks cross_entropy for its label verdict as a tensor (on CUDA it is read
// back later); on the CPU a bad label still throws at once, and a good batch reports row -1.
TEST(CrossEntropy, DeferredLabelVerdictOnTheCpu) {
  const Tensor logits = Tensor::from_vector<float>({0.5f, -1, 2, 0, 0, 1}, {2, 3});
  Tensor bad;
  const Tensor loss = cross_entropy(logits, Tensor::from_vector<int64_t>({2, 0}, {2}), &bad);
  EXPECT_EQ(bad.device(), Device::CPU);
  EXPECT_EQ(bad.to_vector<int64_t>(), std::vector<int64_t>{-1});
  EXPECT_GT(loss.item(), 0.0);
  expect_error([&] { cross_entropy(logits, Tensor::from_vector<int64_t>({2, 3}, {2}), &bad); },
               {"cross_entropy", "label 3 at row 1", "outside [0, 3)", "[2, 3]"});
}

}  // namespace
}  // namespace tdrop
