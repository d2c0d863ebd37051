// Tensor basics: creation, shapes and strides, views (reshape, narrow, transpose) and
// contiguous(), dtype conversion, clone/copy_, item(), empty and undefined tensors, set_data.
// Everything runs on the CPU; values are checked element by element against plain indexing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/copy.h"
#include "core/device.h"
#include "core/error.h"
#include "core/tensor.h"
#include "kernels/ops.h"
#include "tests/expect_error.h"
#include "tests/grad_check.h"

namespace tdrop {
namespace {

using testing::fresh_seed;

// Runs `f`, expecting a tdrop::Error whose message contains every one of `needles`.
using testing::expect_error;

std::vector<float> iota_floats(int64_t n, float start = 0.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = start + static_cast<float>(i);
  return v;
}

std::vector<float> random_floats(int64_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> d(-10.0f, 10.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Creation
// ---------------------------------------------------------------------------------------------

TEST(TensorCreate, EmptyHasShapeStridesDtypeDevice) {
  Tensor t = Tensor::empty({2, 3, 4}, DType::F64);
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_EQ(t.dim(), 3);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.dtype(), DType::F64);
  EXPECT_EQ(t.device(), Device::CPU);
  EXPECT_FALSE(t.is_cuda());
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.offset(), 0);
  EXPECT_GE(t.storage()->bytes, 24 * sizeof(double));
  EXPECT_EQ(t.describe(), "F64[2, 3, 4] on cpu");
  EXPECT_FALSE(t.requires_grad());
  EXPECT_FALSE(t.grad().defined());
  EXPECT_EQ(t.grad_fn(), nullptr);
}

TEST(TensorCreate, ZerosAndFullForEveryDtype) {
  for (DType dt : {DType::F32, DType::F64, DType::I64, DType::U8}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor z = Tensor::zeros({3, 5}, dt);
    EXPECT_EQ(z.dtype(), dt);
    for (double v : z.to_double_vector()) EXPECT_EQ(v, 0.0);
    Tensor f = Tensor::full({4}, 7.0, dt);
    EXPECT_EQ(f.dtype(), dt);
    EXPECT_EQ(f.to_double_vector(), (std::vector<double>{7, 7, 7, 7}));
  }
  // Fractional values survive in floating types and truncate toward zero in integer ones.
  EXPECT_EQ(Tensor::full({1}, 2.5, DType::F32).item(), 2.5);
  EXPECT_EQ(Tensor::full({1}, -2.75, DType::F64).item(), -2.75);
  EXPECT_EQ(Tensor::full({1}, -2.75, DType::I64).item(), -2.0);
}

TEST(TensorCreate, FromVectorKeepsValuesInRowMajorOrder) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::vector<float> v = random_floats(6, rng);
  Tensor t = Tensor::from_vector(v, {2, 3});
  EXPECT_EQ(t.dtype(), DType::F32);
  EXPECT_EQ(t.to_vector<float>(), v);
  const float* p = t.data<float>();
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(p[i * t.strides()[0] + j], v[i * 3 + j]);

  Tensor labels = Tensor::from_vector<int64_t>({3, -1, 9}, {3});
  EXPECT_EQ(labels.dtype(), DType::I64);
  EXPECT_EQ(labels.to_vector<int64_t>(), (std::vector<int64_t>{3, -1, 9}));
  Tensor mask = Tensor::from_vector<uint8_t>({0, 255}, {2, 1});
  EXPECT_EQ(mask.dtype(), DType::U8);
  EXPECT_EQ(mask.to_double_vector(), (std::vector<double>{0, 255}));
}

TEST(TensorCreate, BadShapesAreErrors) {
  expect_error([] { Tensor::from_vector<float>({1, 2, 3}, {2, 2}); },
               {"from_vector", "3 values", "[2, 2]"});
  expect_error([] { Tensor::empty({2, -3}); }, {"negative dimension", "[2, -3]"});
  // -1 (reshape's "infer this dim") is no dimension of a tensor either, in any place.
  expect_error([] { Tensor::empty({-1}); }, {"negative dimension", "[-1]"});
  expect_error([] { Tensor::zeros({4, -1}); }, {"negative dimension", "[4, -1]"});
  expect_error([] { Tensor::zeros({1 << 20, 1 << 20, 1 << 20}); }, {"too many elements"});
  // Empty, but its strides would overflow: refused in any order of the dimensions.
  const int64_t huge = int64_t{1} << 62;
  expect_error([&] { Tensor::empty({0, huge, 8}); }, {"too many elements", "[0, "});
  expect_error([&] { Tensor::empty({huge, 8, 0}); }, {"too many elements"});
  EXPECT_EQ(Tensor::empty({0, 1 << 20, 1 << 20}).numel(), 0);  // large but representable
  // More memory than the machine has: the error names the tensor.
  expect_error([] { Tensor::empty({int64_t{1} << 25, int64_t{1} << 24}); },
               {"out of host memory", "F32[33554432, 16777216]"});
}

TEST(TensorCreate, ZeroDimensionalScalar) {
  Tensor s = Tensor::full({}, 3.25);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.numel(), 1);
  EXPECT_TRUE(s.strides().empty());
  EXPECT_TRUE(s.is_contiguous());
  EXPECT_EQ(s.item(), 3.25);
  EXPECT_EQ(s.describe(), "F32[] on cpu");
}

TEST(TensorCreate, DataWithWrongTypeIsAnError) {
  Tensor t = Tensor::zeros({2}, DType::F32);
  expect_error([&] { t.data<double>(); }, {"data<F64>", "F32"});
  expect_error([&] { t.to_vector<int64_t>(); }, {"to_vector<I64>", "F32"});
}

TEST(TensorCreate, CudaWithoutGpuIsAnError) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present; this checks the no-GPU error path";
  // No talk of running out of memory: the message says there is no GPU.
  expect_error([] { Tensor::zeros({4}).to(Device::CUDA); }, {"no usable CUDA GPU"});
  expect_error([] { Tensor::empty({4}, DType::F32, Device::CUDA); },
               {"Tensor::empty", "no usable CUDA GPU", "no driver or no device"});
}

// ---------------------------------------------------------------------------------------------
// Shapes, sizes and strides
// ---------------------------------------------------------------------------------------------

TEST(TensorShape, ContiguousStridesAndSizes) {
  EXPECT_EQ(contiguous_strides({}), Shape{});
  EXPECT_EQ(contiguous_strides({7}), Shape{1});
  EXPECT_EQ(contiguous_strides({2, 3, 4, 5}), (Shape{60, 20, 5, 1}));
  // A zero-sized dim does not zero the strides of the dims before it.
  EXPECT_EQ(contiguous_strides({3, 0, 2}), (Shape{2, 2, 1}));
  EXPECT_EQ(shape_numel({}), 1);
  EXPECT_EQ(shape_numel({3, 0, 2}), 0);
  EXPECT_EQ(shape_numel({2, 3, 4}), 24);

  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.size(0), 2);
  EXPECT_EQ(t.size(2), 4);
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_EQ(t.size(-3), 2);
  expect_error([&] { t.size(3); }, {"size(3)", "F32[2, 3, 4]"});
  expect_error([&] { t.size(-4); }, {"out of range"});
}

// Row-wise ops (softmax, layer norm) see a tensor as rows of its last dim; no entries, no rows.
TEST(TensorShape, LastAxisRowsCountsRowsOfTheLastDim) {
  EXPECT_EQ(last_axis_rows({2, 3, 4}), 6);
  EXPECT_EQ(last_axis_rows({7}), 1);
  EXPECT_EQ(last_axis_rows({5, 1}), 5);
  EXPECT_EQ(last_axis_rows({0, 5}), 0);
  EXPECT_EQ(last_axis_rows({4, 0}), 0);
  EXPECT_EQ(last_axis_rows({}), 0);
}

// ---------------------------------------------------------------------------------------------
// reshape
// ---------------------------------------------------------------------------------------------

TEST(TensorReshape, ContiguousReshapeIsAViewSharingData) {
  Tensor t = Tensor::from_vector(iota_floats(24), {2, 3, 4});
  Tensor r = t.reshape({6, 4});
  EXPECT_EQ(r.shape(), (Shape{6, 4}));
  EXPECT_EQ(r.strides(), (Shape{4, 1}));
  EXPECT_EQ(r.storage(), t.storage());
  EXPECT_EQ(r.to_vector<float>(), iota_floats(24));
  r.data<float>()[5] = -1.0f;  // writes through to the original
  EXPECT_EQ(t.to_vector<float>()[5], -1.0f);
}

TEST(TensorReshape, InfersOneMinusOneDimension) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.reshape({-1}).shape(), Shape{24});
  EXPECT_EQ(t.reshape({4, -1}).shape(), (Shape{4, 6}));
  EXPECT_EQ(t.reshape({-1, 2, 3}).shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(t.reshape({2, -1, 1}).shape(), (Shape{2, 12, 1}));
  EXPECT_EQ(Tensor::full({1}, 1.0).reshape({}).shape(), Shape{});
}

TEST(TensorReshape, BadShapesAreErrors) {
  Tensor t = Tensor::zeros({2, 3, 4});
  expect_error([&] { t.reshape({5, 5}); }, {"reshape", "F32[2, 3, 4]", "[5, 5]"});
  expect_error([&] { t.reshape({-1, -1}); }, {"more than one -1"});
  expect_error([&] { t.reshape({5, -1}); }, {"cannot infer -1", "[5, -1]"});
  expect_error([&] { t.reshape({-2, 12}); }, {"bad dimension"});
  expect_error([&] { t.reshape({0, -1}); }, {"cannot infer -1"});
}

TEST(TensorReshape, NonContiguousSourceIsCopiedInLogicalOrder) {
  Tensor t = Tensor::from_vector(iota_floats(6), {2, 3});
  Tensor tt = t.transpose(0, 1);  // [3, 2]: rows are columns of t
  Tensor r = tt.reshape({6});
  EXPECT_EQ(r.to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_NE(r.storage(), t.storage());
}

// ---------------------------------------------------------------------------------------------
// narrow / transpose views and contiguous()
// ---------------------------------------------------------------------------------------------

TEST(TensorViews, NarrowIsAViewWithOffset) {
  Tensor t = Tensor::from_vector(iota_floats(20), {4, 5});
  Tensor rows = t.narrow(0, 1, 2);  // rows 1..2: still contiguous
  EXPECT_EQ(rows.shape(), (Shape{2, 5}));
  EXPECT_EQ(rows.offset(), 5);
  EXPECT_TRUE(rows.is_contiguous());
  EXPECT_EQ(rows.storage(), t.storage());
  EXPECT_EQ(rows.to_vector<float>(), iota_floats(10, 5.0f));

  Tensor cols = t.narrow(-1, 2, 3);  // columns 2..4: a strided view
  EXPECT_EQ(cols.shape(), (Shape{4, 3}));
  EXPECT_EQ(cols.strides(), (Shape{5, 1}));
  EXPECT_EQ(cols.offset(), 2);
  EXPECT_FALSE(cols.is_contiguous());
  const std::vector<float> got = cols.to_vector<float>();
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(got[i * 3 + j], static_cast<float>(i * 5 + 2 + j));

  // Writing through a view changes the original.
  cols.data<float>()[0] = 100.0f;  // element (0, 2) of t
  EXPECT_EQ(t.to_vector<float>()[2], 100.0f);

  EXPECT_EQ(t.narrow(1, 5, 0).numel(), 0);  // an empty slice at the end is allowed
  expect_error([&] { t.narrow(0, 3, 2); }, {"narrow", "start 3", "length 2", "F32[4, 5]"});
  expect_error([&] { t.narrow(2, 0, 1); }, {"narrow", "dim 2"});
  expect_error([&] { t.narrow(-3, 0, 1); }, {"narrow", "dim -3"});  // the index as given
  expect_error([&] { t.narrow(0, -1, 1); }, {"narrow"});
  // start + length overflows int64: still out of range, not a view past the end.
  expect_error([&] { t.narrow(0, 1, std::numeric_limits<int64_t>::max()); }, {"narrow"});
  expect_error([&] { t.narrow(0, std::numeric_limits<int64_t>::max(), 2); }, {"narrow"});
  expect_error([&] { t.size(-3); }, {"size(-3)", "F32[4, 5]"});
  expect_error([&] { t.transpose(-3, 0); }, {"transpose(-3, 0)"});
}

TEST(TensorViews, TransposeSwapsShapeAndStrides) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::vector<float> v = random_floats(2 * 3 * 4, rng);
  Tensor t = Tensor::from_vector(v, {2, 3, 4});
  Tensor tr = t.transpose(0, 2);  // [4, 3, 2]
  EXPECT_EQ(tr.shape(), (Shape{4, 3, 2}));
  EXPECT_EQ(tr.strides(), (Shape{1, 4, 12}));
  EXPECT_FALSE(tr.is_contiguous());
  EXPECT_EQ(tr.storage(), t.storage());
  const std::vector<float> got = tr.to_vector<float>();
  for (int64_t a = 0; a < 4; ++a)
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t c = 0; c < 2; ++c)
        EXPECT_EQ(got[(a * 3 + b) * 2 + c], v[(c * 3 + b) * 4 + a]) << a << "," << b << "," << c;
  EXPECT_EQ(t.transpose(-1, -2).shape(), (Shape{2, 4, 3}));
  EXPECT_EQ(t.transpose(1, 1).strides(), t.strides());
  expect_error([&] { t.transpose(0, 3); }, {"transpose(0, 3)", "F32[2, 3, 4]"});
}

TEST(TensorViews, ContiguousCopiesStridedViewsOnly) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::vector<float> v = random_floats(5 * 6, rng);
  Tensor t = Tensor::from_vector(v, {5, 6});
  EXPECT_TRUE(t.contiguous().same(t));  // already contiguous: the same handle

  // Transpose, then narrow: a view with an offset and swapped strides.
  Tensor view = t.transpose(0, 1).narrow(0, 1, 4).narrow(1, 2, 3);  // [4, 3]
  EXPECT_FALSE(view.is_contiguous());
  Tensor c = view.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.shape(), (Shape{4, 3}));
  EXPECT_EQ(c.strides(), (Shape{3, 1}));
  EXPECT_EQ(c.offset(), 0);
  EXPECT_NE(c.storage(), t.storage());
  const std::vector<float> got = c.to_vector<float>();
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 3; ++j)  // view(i, j) = t(2 + j, 1 + i)
      EXPECT_EQ(got[i * 3 + j], v[(2 + j) * 6 + (1 + i)]);
  // The copy is independent of the original.
  c.data<float>()[0] = 1e6f;
  EXPECT_EQ(t.to_vector<float>()[2 * 6 + 1], v[2 * 6 + 1]);
}

// Strided views of up to 4 dims (transposed, narrowed at both ends, rows whole or not) copy to
// the element each index names in the storage, also when the copy converts the dtype.
TEST(TensorViews, ContiguousCopyOfRandomViewsReadsTheNamedElements) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 200; ++trial) {
    const int nd = 1 + static_cast<int>(rng() % 4);
    Shape shape;
    for (int d = 0; d < nd; ++d) shape.push_back(1 + static_cast<int64_t>(rng() % 6));
    int64_t total = 1;
    for (int64_t s : shape) total *= s;
    const std::vector<float> v = random_floats(total, rng);
    Tensor view = Tensor::from_vector(v, shape);
    for (int k = 0; k < 3; ++k) {
      const int64_t a = static_cast<int64_t>(rng() % nd), b = static_cast<int64_t>(rng() % nd);
      view = view.transpose(a, b);
      const int64_t d = static_cast<int64_t>(rng() % nd), len = view.size(d);
      const int64_t start = static_cast<int64_t>(rng() % len);
      view = view.narrow(d, start, 1 + static_cast<int64_t>(rng() % (len - start)));
    }
    SCOPED_TRACE("trial " + std::to_string(trial) + " " + view.describe());
    // Expected: walk the view's index space, reading the storage through its strides.
    std::vector<double> want;
    std::vector<int64_t> idx(static_cast<size_t>(nd), 0);
    for (int64_t i = 0; i < view.numel(); ++i) {
      int64_t off = view.offset();
      for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * view.strides()[d];
      want.push_back(v[static_cast<size_t>(off)]);
      for (int d = nd - 1; d >= 0; --d) {
        if (++idx[static_cast<size_t>(d)] < view.size(d)) break;
        idx[static_cast<size_t>(d)] = 0;
      }
    }
    const std::vector<float> same = view.contiguous().to_vector<float>();
    const Tensor as_f64 = view.to(DType::F64);
    ASSERT_EQ(same.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(same[i], static_cast<float>(want[i])) << "element " << i;
      ASSERT_EQ(as_f64.data<double>()[i], want[i]) << "element " << i << " as F64";
    }
  }
}

TEST(TensorViews, SizeOneDimsDoNotBreakContiguity) {
  Tensor t = Tensor::zeros({3, 1, 4});
  Tensor u = t.transpose(0, 1);  // [1, 3, 4]: same memory order
  EXPECT_TRUE(u.is_contiguous());
  EXPECT_TRUE(Tensor::zeros({4, 1}).transpose(0, 1).is_contiguous());
  EXPECT_FALSE(Tensor::zeros({4, 2}).transpose(0, 1).is_contiguous());
}

// The tensor-level views (reshape, narrow, transpose) and detach() share data but no autograd
// state: no history of the tensor they view (gradients through views flow only through the ops
// in kernels/), no .grad of it, no requires_grad.
TEST(TensorViews, ViewsCarryNoGradientState) {
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  x.set_requires_grad(true);
  x.set_grad(Tensor::full({2, 3}, 7.0));
  Tensor y = mul_scalar(x, 2.0);
  ASSERT_NE(y.grad_fn(), nullptr);
  y.set_grad(Tensor::full({2, 3}, 9.0));
  for (const Tensor* base : {&x, &y}) {
    const std::vector<std::pair<const char*, Tensor>> views = {
        {"reshape", base->reshape({3, 2})},
        {"narrow", base->narrow(1, 1, 2)},
        {"transpose", base->transpose(0, 1)},
        {"detach", base->detach()}};
    for (const auto& [name, v] : views) {
      SCOPED_TRACE(std::string(name) + (base == &x ? " of a leaf" : " of an op's output"));
      EXPECT_EQ(v.storage(), base->storage());
      EXPECT_EQ(v.grad_fn(), nullptr);
      EXPECT_FALSE(v.grad().defined());
      EXPECT_FALSE(v.requires_grad());
    }
  }
  // So a view used in an op beside a tensor that needs a gradient passes none back to y's
  // history: x gets nothing through it.
  x.set_grad(Tensor());
  Tensor w = Tensor::from_vector<float>({1, 1, 1, 1, 1, 1}, {3, 2});
  w.set_requires_grad(true);
  sum(mul(y.reshape({3, 2}), w)).backward();
  EXPECT_FALSE(x.grad().defined());
  EXPECT_EQ(w.grad().to_vector<float>(), (std::vector<float>{2, 4, 6, 8, 10, 12}));
}

// The strided copy keeps its index in fixed arrays of kMaxDims: a tensor of more dims is an
// error naming it, not a write past them.
TEST(TensorViews, CopyOfMoreDimsThanSupportedIsAnError) {
  Tensor t = Tensor::zeros(Shape(kMaxDims + 1, 2));
  expect_error([&] { t.transpose(0, kMaxDims).contiguous(); },
               {"more than 8 dims", "F32[2, 2, 2, 2, 2, 2, 2, 2, 2]"});
  EXPECT_EQ(Tensor::zeros(Shape(kMaxDims, 2)).transpose(0, kMaxDims - 1).contiguous().numel(),
            256);
}

// ---------------------------------------------------------------------------------------------
// to(dtype), clone, copy_
// ---------------------------------------------------------------------------------------------

TEST(TensorConvert, F32ToF64AndBackIsExact) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<float> v = random_floats(50, rng);
  v.push_back(std::numeric_limits<float>::max());
  v.push_back(std::numeric_limits<float>::denorm_min());
  v.push_back(-0.0f);
  Tensor t = Tensor::from_vector(v, {53});
  Tensor d = t.to(DType::F64);
  EXPECT_EQ(d.dtype(), DType::F64);
  EXPECT_EQ(d.shape(), t.shape());
  const std::vector<double> dv = d.to_vector<double>();
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(dv[i], static_cast<double>(v[i]));
  EXPECT_EQ(d.to(DType::F32).to_vector<float>(), v);
  EXPECT_TRUE(std::signbit(d.to(DType::F32).to_vector<float>()[52]));
  EXPECT_TRUE(t.to(DType::F32).same(t));  // no-op conversion returns the same handle
}

TEST(TensorConvert, IntegerConversions) {
  Tensor f = Tensor::from_vector<float>({2.7f, -2.7f, 0.0f, 254.9f}, {4});
  EXPECT_EQ(f.to(DType::I64).to_vector<int64_t>(), (std::vector<int64_t>{2, -2, 0, 254}));
  Tensor u = Tensor::from_vector<uint8_t>({0, 1, 128, 255}, {2, 2});
  Tensor uf = u.to(DType::F32);
  EXPECT_EQ(uf.shape(), (Shape{2, 2}));
  EXPECT_EQ(uf.to_vector<float>(), (std::vector<float>{0, 1, 128, 255}));
  EXPECT_EQ(uf.to(DType::U8).to_vector<uint8_t>(), (std::vector<uint8_t>{0, 1, 128, 255}));
  // Large int64 values survive a round trip through F64 (below 2^53).
  const int64_t big = (int64_t{1} << 52) + 3;
  Tensor i = Tensor::from_vector<int64_t>({big, -big}, {2});
  EXPECT_EQ(i.to(DType::F64).to(DType::I64).to_vector<int64_t>(), (std::vector<int64_t>{big, -big}));
}

// Floats outside an integer type's range, and NaN, have no C++ cast (it is undefined): they
// saturate, NaN gives 0, as CUDA's conversions do. The same for a strided source and for fill.
TEST(TensorConvert, FloatsOutsideAnIntegerRangeSaturateAndNanIsZero) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  const std::vector<float> x = {nan, 300.0f, -5.0f, 1e30f, -1e30f, 2.9f, -inf, inf, 9.3e18f};
  const int64_t top = std::numeric_limits<int64_t>::max();
  const int64_t bottom = std::numeric_limits<int64_t>::min();
  const std::vector<uint8_t> want_u8 = {0, 255, 0, 255, 0, 2, 0, 255, 255};
  const std::vector<int64_t> want_i64 = {0, 300, -5, top, bottom, 2, bottom, top, top};
  const Tensor f = Tensor::from_vector(x, {9});
  EXPECT_EQ(f.to(DType::U8).to_vector<uint8_t>(), want_u8);
  EXPECT_EQ(f.to(DType::I64).to_vector<int64_t>(), want_i64);
  EXPECT_EQ(f.to(DType::F64).to(DType::I64).to_vector<int64_t>(), want_i64);
  std::vector<float> every_other(18, 7.0f);  // x in the even places: column 0 is a strided view
  for (size_t i = 0; i < x.size(); ++i) every_other[2 * i] = x[i];
  const Tensor strided = Tensor::from_vector(every_other, {9, 2}).narrow(1, 0, 1);
  ASSERT_FALSE(strided.is_contiguous());
  EXPECT_EQ(strided.to(DType::U8).to_vector<uint8_t>(), want_u8);
  EXPECT_EQ(Tensor::full({2}, std::nan(""), DType::I64).to_vector<int64_t>(),
            (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(Tensor::full({1}, 1e300, DType::U8).to_vector<uint8_t>(), (std::vector<uint8_t>{255}));
}

TEST(TensorConvert, ConvertingAStridedViewKeepsLogicalOrder) {
  Tensor t = Tensor::from_vector(iota_floats(6), {2, 3});
  Tensor d = t.transpose(0, 1).to(DType::F64);
  EXPECT_TRUE(d.is_contiguous());
  EXPECT_EQ(d.to_vector<double>(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
}

TEST(TensorCopy, CloneIsIndependentAndDropsHistory) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::vector<float> v = random_floats(12, rng);
  Tensor t = Tensor::from_vector(v, {3, 4});
  t.set_requires_grad(true);
  Tensor y = mul_scalar(t, 2.0);
  ASSERT_NE(y.grad_fn(), nullptr);
  Tensor c = y.clone();
  EXPECT_EQ(c.grad_fn(), nullptr);
  EXPECT_FALSE(c.requires_grad());
  EXPECT_NE(c.storage(), y.storage());
  const std::vector<float> yv = y.to_vector<float>();
  EXPECT_EQ(c.to_vector<float>(), yv);
  c.data<float>()[3] += 1.0f;
  EXPECT_EQ(y.to_vector<float>(), yv);  // the original is untouched
  // Cloning a strided view gives a contiguous tensor with the view's values.
  Tensor ct = t.transpose(0, 1).clone();
  EXPECT_TRUE(ct.is_contiguous());
  EXPECT_EQ(ct.shape(), (Shape{4, 3}));
  EXPECT_EQ(ct.to_vector<float>()[1], v[4]);  // ct(0, 1) = t(1, 0)
}

TEST(TensorCopy, CopyAcrossDtypes) {
  Tensor dst = Tensor::zeros({2, 2}, DType::F32);
  dst.copy_(Tensor::from_vector<double>({0.5, -1.25, 3.0, 1e-3}, {2, 2}));
  EXPECT_EQ(dst.dtype(), DType::F32);
  EXPECT_EQ(dst.to_vector<float>(), (std::vector<float>{0.5f, -1.25f, 3.0f, 1e-3f}));
  dst.copy_(Tensor::from_vector<int64_t>({1, 2, -3, 4}, {2, 2}));
  EXPECT_EQ(dst.to_vector<float>(), (std::vector<float>{1, 2, -3, 4}));
  dst.copy_(Tensor::from_vector<uint8_t>({9, 8, 7, 200}, {2, 2}));
  EXPECT_EQ(dst.to_vector<float>(), (std::vector<float>{9, 8, 7, 200}));
  Tensor labels = Tensor::zeros({2, 2}, DType::I64);
  labels.copy_(Tensor::from_vector<float>({1.9f, -0.5f, 7.0f, 3.2f}, {2, 2}));
  EXPECT_EQ(labels.to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 7, 3}));
}

TEST(TensorCopy, CopyFromStridedSourceAndIntoViews) {
  Tensor src = Tensor::from_vector(iota_floats(6), {3, 2});
  Tensor dst = Tensor::zeros({2, 3}, DType::F64);
  dst.copy_(src.transpose(0, 1));
  EXPECT_EQ(dst.to_vector<double>(), (std::vector<double>{0, 2, 4, 1, 3, 5}));
  // A contiguous view (rows of a bigger tensor) can be written through.
  Tensor big = Tensor::zeros({4, 3});
  Tensor mid = big.narrow(0, 1, 2);
  mid.copy_(dst);
  EXPECT_EQ(big.to_vector<float>(), (std::vector<float>{0, 0, 0, 0, 2, 4, 1, 3, 5, 0, 0, 0}));
}

// Source and destination share storage: every element must come from the source as it was
// before the copy, as if it had been copied out first.
TEST(TensorCopy, CopyBetweenOverlappingViewsReadsTheSourceAsItWas) {
  Tensor t = Tensor::from_vector(iota_floats(9), {3, 3});
  t.copy_(t.transpose(0, 1));
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{0, 3, 6, 1, 4, 7, 2, 5, 8}));
  Tensor u = Tensor::from_vector(iota_floats(6), {6});
  u.narrow(0, 1, 5).copy_(u.narrow(0, 0, 5));  // shift right by one, overlapping
  EXPECT_EQ(u.to_vector<float>(), (std::vector<float>{0, 0, 1, 2, 3, 4}));
  Tensor v = Tensor::from_vector(iota_floats(4), {4});
  v.copy_(v);  // the same elements: unchanged
  EXPECT_EQ(v.to_vector<float>(), iota_floats(4));
}

TEST(TensorCopy, CopyErrors) {
  Tensor dst = Tensor::zeros({2, 3});
  expect_error([&] { dst.copy_(Tensor::zeros({3, 2})); }, {"copy_", "[3, 2]", "[2, 3]"});
  Tensor strided = Tensor::zeros({3, 2}).transpose(0, 1);
  expect_error([&] { strided.copy_(Tensor::zeros({2, 3})); }, {"copy_", "contiguous"});
  expect_error([&] { strided.zero_(); }, {"zero_", "contiguous"});
}

TEST(TensorCopy, ZeroFillsInPlace) {
  Tensor t = Tensor::full({3, 3}, 4.0, DType::F64);
  Tensor alias = t;
  t.zero_();
  for (double v : alias.to_double_vector()) EXPECT_EQ(v, 0.0);
}

// ---------------------------------------------------------------------------------------------
// item()
// ---------------------------------------------------------------------------------------------

TEST(TensorItem, OneElementOfAnyShapeAndDtype) {
  EXPECT_EQ(Tensor::full({1, 1, 1}, -4.5, DType::F64).item(), -4.5);
  EXPECT_EQ(Tensor::full({1}, 42, DType::I64).item(), 42.0);
  EXPECT_EQ(Tensor::full({1}, 200, DType::U8).item(), 200.0);
  Tensor t = Tensor::from_vector(iota_floats(6), {2, 3});
  EXPECT_EQ(t.narrow(0, 1, 1).narrow(1, 2, 1).item(), 5.0);
}

TEST(TensorItem, MoreOrFewerElementsAreErrors) {
  expect_error([] { Tensor::zeros({2}).item(); }, {"item()", "F32[2]", "exactly one element"});
  expect_error([] { Tensor::zeros({0}).item(); }, {"item()", "F32[0]"});
  expect_error([] { Tensor().item(); }, {"undefined"});
}

// ---------------------------------------------------------------------------------------------
// Empty tensors: a [0, 5] tensor is a valid tensor with no elements
// ---------------------------------------------------------------------------------------------

TEST(TensorEmpty, ZeroRowsTensorWorksEverywhere) {
  Tensor e = Tensor::zeros({0, 5});
  EXPECT_TRUE(e.defined());
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(e.shape(), (Shape{0, 5}));
  EXPECT_EQ(e.strides(), (Shape{5, 1}));
  EXPECT_TRUE(e.is_contiguous());
  EXPECT_EQ(e.describe(), "F32[0, 5] on cpu");
  EXPECT_TRUE(e.to_vector<float>().empty());
  EXPECT_TRUE(e.to_double_vector().empty());
  EXPECT_EQ(e.clone().shape(), (Shape{0, 5}));
  EXPECT_EQ(e.to(DType::I64).shape(), (Shape{0, 5}));
  EXPECT_EQ(e.to(DType::I64).dtype(), DType::I64);
  EXPECT_EQ(e.reshape({-1, 5}).shape(), (Shape{0, 5}));
  EXPECT_EQ(e.reshape({-1}).shape(), Shape{0});
  EXPECT_EQ(e.narrow(1, 1, 3).shape(), (Shape{0, 3}));
  Tensor dst = Tensor::empty({0, 5}, DType::F64);
  dst.copy_(e);
  dst.zero_();
  EXPECT_EQ(dst.numel(), 0);
  Tensor f = Tensor::full({0, 5}, 3.0);
  EXPECT_EQ(f.numel(), 0);
}

TEST(TensorEmpty, ZeroSizedInnerDimension) {
  // A tensor with no elements has nothing out of order: it is contiguous whatever its strides
  // (as in PyTorch), so creating, copying and transposing one must work like [0, 5] does.
  EXPECT_TRUE(Tensor::empty({5, 0}).is_contiguous());
  EXPECT_TRUE(Tensor::empty({3, 0, 1}).transpose(0, 2).is_contiguous());
  Tensor z = Tensor::zeros({5, 0});
  EXPECT_EQ(z.numel(), 0);
  EXPECT_EQ(Tensor::zeros({2, 0, 3}).numel(), 0);
  Tensor e = Tensor::zeros({0, 5});
  EXPECT_EQ(e.reshape({5, 0}).shape(), (Shape{5, 0}));
  EXPECT_EQ(e.transpose(0, 1).shape(), (Shape{5, 0}));
  EXPECT_EQ(e.transpose(0, 1).contiguous().numel(), 0);
  EXPECT_EQ(e.transpose(0, 1).clone().shape(), (Shape{5, 0}));
  z.copy_(e.transpose(0, 1));
}

TEST(TensorEmpty, OpsOnEmptyTensors) {
  Tensor e = Tensor::zeros({0, 5});
  Tensor s = add(e, e);
  EXPECT_EQ(s.shape(), (Shape{0, 5}));
  // Summing over the empty axis gives zeros, as in NumPy and PyTorch.
  Tensor col = sum(e, {0});
  EXPECT_EQ(col.shape(), Shape{5});
  EXPECT_EQ(col.to_double_vector(), std::vector<double>(5, 0.0));
  EXPECT_EQ(sum(e).item(), 0.0);
}

// ---------------------------------------------------------------------------------------------
// Undefined tensors: a clear error, never a crash
// ---------------------------------------------------------------------------------------------

// sum() of a contiguous tensor over its leading or trailing axes takes a fast path; over other
// axes, or of a strided view, it walks the elements. Both add each output's elements in the same
// order, so a contiguous tensor and a strided view of the same values sum to the same bits.
TEST(TensorReduce, SumOfContiguousAndStridedTensorsAgreeBitForBit) {
  const uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (DType dt : {DType::F32, DType::F64})
    for (const Shape& shape :
         {Shape{7, 1, 9}, Shape{2, 3, 5}, Shape{129, 33}, Shape{5, 0, 3}, Shape{11}})
      for (const std::vector<int64_t>& axes : std::vector<std::vector<int64_t>>{
               {}, {0}, {-1}, {0, 1}, {1}, {1, 2}, {0, 2}}) {
        if (std::any_of(axes.begin(), axes.end(),
                        [&](int64_t a) { return a >= static_cast<int64_t>(shape.size()); }))
          continue;
        std::string axes_str;
        for (int64_t a : axes) axes_str.append(" ").append(std::to_string(a));
        SCOPED_TRACE(shape_str(shape) + " " + dtype_name(dt) + " axes" + axes_str);
        const Tensor x = testing::random_tensor(shape, rng, -1, 1, dt);
        const int64_t last = x.dim() - 1;
        // The same values, laid out transposed: a strided view.
        const Tensor strided = x.transpose(0, last).contiguous().transpose(0, last);
        if (x.dim() > 1 && x.size(0) > 1 && x.size(last) > 1 && x.numel() > 0) {
          ASSERT_FALSE(strided.is_contiguous());
        }
        const std::vector<double> fast = sum(x, axes).to_double_vector();
        const std::vector<double> walk = sum(strided, axes).to_double_vector();
        ASSERT_EQ(fast.size(), walk.size());
        for (size_t i = 0; i < fast.size(); ++i) ASSERT_EQ(fast[i], walk[i]) << "output " << i;
        if (axes.empty()) {  // and the total is the total
          double want = 0;
          for (double v : x.to_double_vector()) want += v;
          ASSERT_NEAR(fast[0], want, 1e-5 * (1 + std::abs(want)));
        }
      }
}

TEST(TensorUndefined, EveryAccessorThrows) {
  Tensor u;
  EXPECT_FALSE(u.defined());
  EXPECT_EQ(u.describe(), "undefined tensor");
  expect_error([&] { u.shape(); }, {"shape", "undefined tensor"});
  expect_error([&] { u.strides(); }, {"undefined tensor"});
  expect_error([&] { u.numel(); }, {"undefined tensor"});
  expect_error([&] { u.dtype(); }, {"dtype", "undefined tensor"});
  expect_error([&] { u.device(); }, {"undefined tensor"});
  expect_error([&] { u.raw_data(); }, {"undefined tensor"});
  expect_error([&] { u.clone(); }, {"undefined tensor"});
  expect_error([&] { u.contiguous(); }, {"undefined tensor"});
  expect_error([&] { u.reshape({1}); }, {"undefined tensor"});
  expect_error([&] { u.to(DType::F64); }, {"undefined tensor"});
  expect_error([&] { u.to_double_vector(); }, {"undefined tensor"});
  expect_error([&] { u.requires_grad(); }, {"undefined tensor"});
  expect_error([&] { u.set_requires_grad(true); }, {"undefined tensor"});
  expect_error([&] { u.detach(); }, {"undefined tensor"});
  expect_error([&] { u.backward(); }, {"undefined tensor"});
  Tensor d = Tensor::zeros({2});
  expect_error([&] { d.copy_(u); }, {"undefined tensor"});
  expect_error([&] { d.set_data(u); }, {"set_data", "undefined tensor"});
  expect_error([&] { add(d, u); }, {"undefined"});
}

// ---------------------------------------------------------------------------------------------
// set_data: every handle sees the new data; autograd settings stay
// ---------------------------------------------------------------------------------------------

TEST(TensorSetData, AllHandlesSeeTheNewData) {
  Tensor p = Tensor::zeros({2, 2});
  p.set_requires_grad(true);
  p.set_grad(Tensor::full({2, 2}, 1.0));
  Tensor handle = p;  // e.g. an optimizer's copy of the parameter handle
  Tensor replacement = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {3, 2});
  p.set_data(replacement);
  EXPECT_EQ(handle.shape(), (Shape{3, 2}));
  EXPECT_EQ(handle.dtype(), DType::F64);
  EXPECT_EQ(handle.to_double_vector(), (std::vector<double>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(handle.storage(), replacement.storage());
  EXPECT_TRUE(handle.requires_grad());      // kept
  EXPECT_FALSE(handle.grad().defined());    // a stale gradient of the old shape is dropped
  EXPECT_TRUE(handle.same(p));
}

TEST(TensorSetData, ViewsKeepTheirOwnShape) {
  Tensor p = Tensor::from_vector(iota_floats(4), {4});
  Tensor src = Tensor::from_vector(iota_floats(6, 10.0f), {2, 3}).narrow(1, 1, 2);  // strided
  p.set_data(src);
  EXPECT_EQ(p.shape(), (Shape{2, 2}));
  EXPECT_EQ(p.strides(), (Shape{3, 1}));
  EXPECT_EQ(p.offset(), 1);
  EXPECT_EQ(p.to_vector<float>(), (std::vector<float>{11, 12, 14, 15}));
}

}  // namespace
}  // namespace tdrop
