// CPU <-> CUDA agreement for every op in kernels/ops.h and every *_cuda kernel entry point.
//
// One table drives it: each OpCase builds its inputs on the CPU from a seed and runs the op on
// whatever device its inputs live on. The test copies the inputs to both devices, runs the case
// on each and compares every output (values, gradients, masks) element by element. Adding an op
// means adding one entry to cases().
//
// The seed comes from std::random_device (or TDROP_TEST_SEED, to replay a failure) and is
// printed with every failure. Without a GPU every test here is skipped.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iomanip>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "core/autograd.h"
#include "core/device.h"
#include "core/philox.h"
#include "core/tensor.h"
#include "kernels/cross_entropy.h"
#include "kernels/dropout.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"
#include "kernels/optim_update.h"
#include "kernels/reduce.h"
#include "tests/expect_error.h"

namespace tdrop {
namespace {

// How an output must match the CPU's: bit for bit (NaN matches NaN), or within the tolerance
// of its dtype (close_tolerance).
enum class Match { Exact, Close };
constexpr Match kExact = Match::Exact, kClose = Match::Close;
constexpr DType F32 = DType::F32, F64 = DType::F64;

using Tensors = std::vector<Tensor>;
using testing::expect_error;

uint64_t draw_seed() {
  if (const char* s = std::getenv("TDROP_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) | rd();
}

std::string seed_note(uint64_t seed) {
  return "seed " + std::to_string(seed) + " (replay with TDROP_TEST_SEED=" +
         std::to_string(seed) + ")";
}

// ---- random inputs ---------------------------------------------------------------------------

class Gen {
 public:
  explicit Gen(uint64_t seed) : rng_(seed, 0x7e57) {}

  uint64_t below(uint64_t n) { return rng_.next_below(n); }
  uint64_t u64() { return (static_cast<uint64_t>(rng_.next_u32()) << 32) | rng_.next_u32(); }
  double u53() {  // uniform in [0, 1) with 53 random bits
    const uint64_t a = rng_.next_u32() >> 5, b = rng_.next_u32() >> 6;
    return (static_cast<double>(a) * 67108864.0 + static_cast<double>(b)) * 0x1p-53;
  }

  // Uniform in [lo, hi).
  Tensor uniform(const Shape& s, DType dt = F32, double lo = -1.0, double hi = 1.0) {
    std::vector<double> v(static_cast<size_t>(shape_numel(s)));
    for (double& x : v) x = lo + (hi - lo) * u53();
    return make(v, s, dt);
  }
  // Magnitude in [0.5, 2) with a random sign: safe divisors.
  Tensor nonzero(const Shape& s, DType dt = F32) {
    std::vector<double> v(static_cast<size_t>(shape_numel(s)));
    for (double& x : v) x = (below(2) ? 1.0 : -1.0) * (0.5 + 1.5 * u53());
    return make(v, s, dt);
  }
  // Multiples of 0.5 in [-k/2, k/2]: many ties and exact zeros (argmax, relu).
  Tensor levels(const Shape& s, DType dt = F32, int k = 4) {
    std::vector<double> v(static_cast<size_t>(shape_numel(s)));
    for (double& x : v) x = 0.5 * (static_cast<double>(below(2 * k + 1)) - k);
    return make(v, s, dt);
  }
  Tensor labels(int64_t n, int64_t classes) {
    std::vector<int64_t> v(static_cast<size_t>(n));
    for (int64_t& y : v) y = static_cast<int64_t>(below(static_cast<uint64_t>(classes)));
    return Tensor::from_vector(v, {n});
  }
  Tensor mask(const Shape& s) {
    std::vector<uint8_t> v(static_cast<size_t>(shape_numel(s)));
    for (uint8_t& m : v) m = static_cast<uint8_t>(below(2));
    return Tensor::from_vector(v, s);
  }
  // `t` with `count` random elements replaced by NaN, +Inf or -Inf.
  Tensor sprinkle(const Tensor& t, int count) {
    std::vector<double> v = t.to_double_vector();
    const double special[3] = {std::numeric_limits<double>::quiet_NaN(),
                               std::numeric_limits<double>::infinity(),
                               -std::numeric_limits<double>::infinity()};
    for (int i = 0; i < count && !v.empty(); ++i) v[below(v.size())] = special[below(3)];
    return make(v, t.shape(), t.dtype());
  }

 private:
  static Tensor make(const std::vector<double>& v, const Shape& s, DType dt) {
    return Tensor::from_vector(v, s).to(dt);
  }
  PhiloxHost rng_;
};

// ---- the registry ----------------------------------------------------------------------------

struct OpCase {
  std::string name;
  // CPU inputs; an input with requires_grad set keeps it on both devices.
  std::function<Tensors(Gen&)> make;
  // Runs the op on the device the inputs are on; returns everything to compare.
  std::function<Tensors(const Tensors&)> run;
  Match match = kExact;
};

void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }

bool on_cuda(const Tensor& t) { return t.device() == Device::CUDA; }

// Calls the _cpu or _cuda variant of a kernel according to where `t` lives.
template <class Cpu, class Cuda, class... Args>
void by_device(const Tensor& t, Cpu cpu, Cuda cuda, const Args&... args) {
  if (on_cuda(t)) cuda(args...);
  else cpu(args...);
}

Tensor empty_like(const Tensor& t, const Shape& s, DType dt) {
  return Tensor::empty(s, dt, t.device());
}

Tensor rg(Tensor t) {
  t.set_requires_grad(true);
  return t;
}

// A scalar that depends on every element of y with a distinct random weight r, so a backward
// pass from it checks every gradient entry.
Tensor weighted_sum(const Tensor& y, const Tensor& r) { return sum(mul(y, r)); }

std::string shape_name(const Shape& s) {
  if (s.empty()) return "scalar";
  std::string n;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) n += 'x';
    n += std::to_string(s[i]);
  }
  return n;
}
std::string dt_name(DType dt) { return dt == F32 ? "f32" : "f64"; }

std::vector<OpCase> build_cases() {
  std::vector<OpCase> cs;
  auto add = [&](std::string name, std::function<Tensors(Gen&)> make,
                 std::function<Tensors(const Tensors&)> run, Match match) {
    cs.push_back({std::move(name), std::move(make), std::move(run), match});
  };

  // -- binary elementwise (ops.h): same shape (vector and tail paths), broadcasting, empty --
  const std::vector<std::pair<Shape, Shape>> pairs = {
      {{1000}, {1000}}, {{257, 33}, {257, 33}}, {{7}, {7}},      {{1}, {1}},
      {{3, 1, 5}, {4, 5}}, {{4, 5}, {1}},       {{1}, {33, 7}}, {{}, {3}},
      {{257, 1}, {1, 33}}, {{0, 5}, {0, 5}},    {{0, 5}, {5}},   {{2, 1, 3, 1, 5}, {4, 3, 7, 1}}};
  struct BinOp {
    const char* name;
    Tensor (*fn)(const Tensor&, const Tensor&);
    Match match;
  };
  const BinOp bin_ops[] = {{"add", tdrop::add, kExact},
                           {"sub", tdrop::sub, kExact},
                           {"mul", tdrop::mul, kExact},
                           {"div", tdrop::div, kClose}};
  for (const BinOp& op : bin_ops)
    for (DType dt : {F32, F64})
      for (const auto& [sa, sb] : pairs) {
        const bool is_div = std::string(op.name) == "div";
        add(std::string(op.name) + "_" + dt_name(dt) + "_" + shape_name(sa) + "_" + shape_name(sb),
            [=](Gen& g) {
              return Tensors{g.uniform(sa, dt), is_div ? g.nonzero(sb, dt) : g.uniform(sb, dt)};
            },
            [fn = op.fn](const Tensors& in) { return Tensors{fn(in[0], in[1])}; }, op.match);
      }
  // Strided operands: a transposed view, and an offset view that breaks 16-byte alignment.
  for (const BinOp& op : bin_ops) {
    add(std::string(op.name) + "_transposed_view",
        [](Gen& g) { return Tensors{g.uniform({33, 7}), g.nonzero({7, 33})}; },
        [fn = op.fn](const Tensors& in) { return Tensors{fn(in[0].transpose(0, 1), in[1])}; },
        op.match);
    add(std::string(op.name) + "_misaligned_view",
        [](Gen& g) { return Tensors{g.uniform({1001}), g.nonzero({1000})}; },
        [fn = op.fn](const Tensors& in) { return Tensors{fn(in[0].narrow(0, 1, 1000), in[1])}; },
        op.match);
  }

  // -- binary_cuda's relu_backward (not in ops.h directly) --
  for (const auto& [sa, sb] : std::vector<std::pair<Shape, Shape>>{
           {{257, 33}, {257, 33}}, {{3, 1, 5}, {4, 5}}, {{0, 5}, {0, 5}}})
    add("relu_grad_" + shape_name(sa) + "_" + shape_name(sb),
        [=](Gen& g) { return Tensors{g.uniform(sa), g.levels(sb)}; },
        [](const Tensors& in) {
          Tensor out = empty_like(in[0], broadcast_shapes(in[0].shape(), in[1].shape(), "t"), F32);
          by_device(in[0], binary_cpu, binary_cuda, BinaryOp::ReluGrad, in[0], in[1], out);
          return Tensors{out};
        },
        kExact);

  // -- unary (ops.h relu / add_scalar / mul_scalar, unary_cuda abs and a general affine) --
  for (DType dt : {F32, F64})
    for (const Shape& s : std::vector<Shape>{{1000}, {257, 33}, {7}, {0, 5}}) {
      const std::string suffix = "_" + dt_name(dt) + "_" + shape_name(s);
      add("relu" + suffix, [=](Gen& g) { return Tensors{g.levels(s, dt)}; },
          [](const Tensors& in) { return Tensors{relu(in[0])}; }, kExact);
      add("add_scalar" + suffix, [=](Gen& g) { return Tensors{g.uniform(s, dt)}; },
          [](const Tensors& in) { return Tensors{add_scalar(in[0], 0.3)}; }, kExact);
      add("mul_scalar" + suffix, [=](Gen& g) { return Tensors{g.uniform(s, dt)}; },
          [](const Tensors& in) { return Tensors{mul_scalar(in[0], -1.7)}; }, kExact);
      for (UnaryOp op : {UnaryOp::Abs, UnaryOp::Affine, UnaryOp::Sign})
        add(std::string(op == UnaryOp::Abs ? "abs" : op == UnaryOp::Sign ? "sign" : "affine") + suffix,
            [=](Gen& g) { return Tensors{op == UnaryOp::Sign ? g.levels(s, dt) : g.uniform(s, dt)}; },
            [op](const Tensors& in) {
              Tensor out = empty_like(in[0], in[0].shape(), in[0].dtype());
              by_device(in[0], unary_cpu, unary_cuda, op, in[0], 0.7, -0.3, out);
              return Tensors{out};
            },
            kExact);
    }
  add("relu_transposed_view", [](Gen& g) { return Tensors{g.levels({33, 7})}; },
      [](const Tensors& in) { return Tensors{relu(in[0].transpose(0, 1))}; }, kExact);
  // One element into its storage: off the 16-byte boundary the float4 path needs.
  add("relu_misaligned_view", [](Gen& g) { return Tensors{g.levels({1001})}; },
      [](const Tensors& in) { return Tensors{relu(in[0].narrow(0, 1, 1000))}; }, kExact);

  // -- axpy_ --
  for (DType dt : {F32, F64})
    for (const Shape& s : std::vector<Shape>{{257, 33}, {1}, {6}, {1000}, {0, 5}})
      add("axpy_" + dt_name(dt) + "_" + shape_name(s),
          [=](Gen& g) { return Tensors{g.uniform(s, dt), g.uniform(s, dt)}; },
          [](const Tensors& in) {
            Tensor acc = in[1];
            axpy_(0.37, in[0], acc);
            return Tensors{acc};
          },
          kExact);
  // x off the 16-byte boundary (scalar path), and x = acc (a gradient added to itself).
  add("axpy_misaligned_x", [](Gen& g) { return Tensors{g.uniform({1001}), g.uniform({1000})}; },
      [](const Tensors& in) {
        Tensor acc = in[1];
        axpy_(0.37, in[0].narrow(0, 1, 1000), acc);
        return Tensors{acc};
      },
      kExact);
  add("axpy_into_itself", [](Gen& g) { return Tensors{g.uniform({1003})}; },
      [](const Tensors& in) {
        Tensor acc = in[0];
        axpy_(0.37, acc, acc);
        return Tensors{acc};
      },
      kExact);

  // -- first_nonfinite --
  for (DType dt : {F32, F64})
    for (const auto& [s, specials] : std::vector<std::pair<Shape, int>>{
             {{1000}, 0}, {{1000}, 1}, {{1000}, 3}, {{257, 33}, 40}, {{7}, 7}, {{0, 5}, 0}})
      add("first_nonfinite_" + dt_name(dt) + "_" + shape_name(s) + "_" + std::to_string(specials),
          [=](Gen& g) { return Tensors{g.sprinkle(g.uniform(s, dt), specials)}; },
          [](const Tensors& in) {
            return Tensors{Tensor::from_vector<int64_t>({first_nonfinite(in[0])}, {1},
                                                        in[0].device())};
          },
          kExact);
  add("first_nonfinite_transposed_view",
      [](Gen& g) { return Tensors{g.sprinkle(g.uniform({33, 7}), 2)}; },
      [](const Tensors& in) {
        return Tensors{Tensor::from_vector<int64_t>({first_nonfinite(in[0].transpose(0, 1))},
                                                    {1}, in[0].device())};
      },
      kExact);

  // -- sum / mean: every sum_axes_cuda path (rows, warp-per-row, block-per-row, generic) --
  struct SumCase {
    Shape shape;
    std::vector<int64_t> axes;
    bool keepdim;
  };
  const std::vector<SumCase> sums = {
      {{257, 33}, {}, false},    {{257, 33}, {0}, false},  {{257, 33}, {1}, false},
      {{257, 33}, {-1}, true},   {{1000, 7}, {0}, false},  {{7, 1000}, {1}, false},
      {{3, 5000}, {1}, false},   {{100000}, {}, false},    {{2000, 40}, {1}, false},
      {{3, 4, 5}, {0, 2}, false}, {{3, 4, 5}, {1}, true},  {{3, 4, 5}, {1, 2}, false},
      {{257, 1, 33}, {0}, false}, {{1}, {}, false},        {{0, 5}, {0}, false},
      {{5, 0}, {1}, false},      {{0, 5}, {1}, false},     {{2, 3, 1, 4, 5}, {0, 3}, true}};
  for (DType dt : {F32, F64})
    for (const SumCase& sc : sums) {
      std::string axes_name;
      for (int64_t a : sc.axes) {
        axes_name += a < 0 ? "_m" : "_";
        axes_name += std::to_string(a < 0 ? -a : a);
      }
      const std::string name = dt_name(dt) + "_" + shape_name(sc.shape) +
                               (sc.axes.empty() ? "_all" : axes_name) + (sc.keepdim ? "_keep" : "");
      // Values in [-0.5, 1): no sum cancels to near 0. The CPU adds in order, off by ~1e-16 of
      // its partial sums; a sum of 1e5 terms in [-1, 1) that ends near 0 would miss 1e-12.
      add("sum_" + name, [=](Gen& g) { return Tensors{g.uniform(sc.shape, dt, -0.5)}; },
          [=](const Tensors& in) { return Tensors{sum(in[0], sc.axes, sc.keepdim)}; }, kClose);
      add("mean_" + name, [=](Gen& g) { return Tensors{g.uniform(sc.shape, dt, -0.5)}; },
          [=](const Tensors& in) { return Tensors{mean(in[0], sc.axes, sc.keepdim)}; }, kClose);
    }
  add("sum_transposed_view", [](Gen& g) { return Tensors{g.uniform({33, 257})}; },
      [](const Tensors& in) { return Tensors{sum(in[0].transpose(0, 1), {0})}; }, kClose);
  add("sum_axes_raw_4d", [](Gen& g) { return Tensors{g.uniform({3, 4, 5, 6})}; },
      [](const Tensors& in) {
        const Tensor x = in[0].transpose(1, 3);  // [3, 6, 5, 4], not contiguous
        Tensor out = empty_like(x, {1, 6, 1, 4}, F32);
        by_device(x, sum_axes_cpu, sum_axes_cuda, x, std::vector<bool>{true, false, true, false},
                  out);
        return Tensors{out};
      },
      kClose);
  for (const auto& [gs, ts] : std::vector<std::pair<Shape, Shape>>{
           {{2, 3, 4, 5}, {3, 1, 5}}, {{7, 33}, {33}}, {{7, 33}, {7, 1}}, {{7, 33}, {1}}})
    add("sum_to_" + shape_name(gs) + "_" + shape_name(ts),
        [=](Gen& g) { return Tensors{g.uniform(gs)}; },
        [=](const Tensors& in) { return Tensors{sum_to(in[0], ts)}; }, kClose);

  // -- argmax: ties (levels), NaN/Inf rows, one column, no rows --
  for (DType dt : {F32, F64})
    for (const auto& [s, specials] : std::vector<std::pair<Shape, int>>{
             {{7, 10}, 0}, {{1000, 10}, 0}, {{1000, 10}, 300}, {{33, 257}, 50}, {{5, 1}, 0},
             {{4, 100}, 400}, {{0, 5}, 0}})
      add("argmax_" + dt_name(dt) + "_" + shape_name(s) + "_" + std::to_string(specials),
          [=](Gen& g) { return Tensors{g.sprinkle(g.levels(s, dt), specials)}; },
          [](const Tensors& in) { return Tensors{argmax(in[0])}; }, kExact);

  // -- matmul / gemm --
  for (DType dt : {F32, F64})
    for (const auto& [sa, sb] : std::vector<std::pair<Shape, Shape>>{
             {{7, 33}, {33, 5}}, {{257, 33}, {33, 1000}}, {{1, 1}, {1, 1}}, {{33, 257}, {257, 7}},
             {{0, 3}, {3, 4}}, {{3, 0}, {0, 4}}, {{3, 4}, {4, 0}}})
      add("matmul_" + dt_name(dt) + "_" + shape_name(sa) + "_" + shape_name(sb),
          [=](Gen& g) { return Tensors{g.uniform(sa, dt), g.uniform(sb, dt)}; },
          [](const Tensors& in) { return Tensors{matmul(in[0], in[1])}; }, kClose);
  add("matmul_transposed_view", [](Gen& g) { return Tensors{g.uniform({33, 7}), g.uniform({33, 5})}; },
      [](const Tensors& in) { return Tensors{matmul(in[0].transpose(0, 1), in[1])}; }, kClose);
  for (DType dt : {F32, F64})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (const auto& [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
                 {7, 33, 257}, {257, 1000, 33}, {1, 1, 1}, {5, 3, 0}, {0, 4, 3}}) {
          const std::string name = "gemm_" + dt_name(dt) + (ta ? "_t" : "_n") + (tb ? "t" : "n") +
                                   "_" + std::to_string(m) + "x" + std::to_string(n) + "x" +
                                   std::to_string(k);
          add(name,
              [=](Gen& g) {
                return Tensors{g.uniform(ta ? Shape{k, m} : Shape{m, k}, dt),
                               g.uniform(tb ? Shape{n, k} : Shape{k, n}, dt),
                               g.uniform({m, n}, dt)};
              },
              [=](const Tensors& in) {
                const Tensor c = in[2];
                by_device(c, gemm_cpu, gemm_cuda, ta, tb, 0.7, in[0], in[1], 0.3, c);
                return Tensors{c};
              },
              kClose);
        }
  for (DType dt : {F32, F64})
    for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{
             {7, 33}, {1000, 10}, {1, 1}, {0, 5}})
      add("fill_rows_" + dt_name(dt) + "_" + std::to_string(rows) + "x" + std::to_string(cols),
          [=](Gen& g) { return Tensors{g.uniform({cols}, dt)}; },
          [=](const Tensors& in) {
            Tensor out = empty_like(in[0], {rows, cols}, in[0].dtype());
            by_device(out, fill_rows_cpu, fill_rows_cuda, in[0], out);
            return Tensors{out};
          },
          kExact);

  // -- linear --
  for (DType dt : {F32, F64})
    for (const auto& [batch, fin, fout] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {7, 33, 5}, {1000, 257, 10}, {1, 1, 1}, {0, 33, 5}}) {
      const std::string shape = std::to_string(batch) + "x" + std::to_string(fin) + "_to_" +
                                std::to_string(fout);
      add("linear_" + dt_name(dt) + "_" + shape,
          [=](Gen& g) {
            return Tensors{g.uniform({batch, fin}, dt), g.uniform({fout, fin}, dt),
                           g.uniform({fout}, dt)};
          },
          [](const Tensors& in) {
            return Tensors{linear(in[0], in[1], in[2]), linear(in[0], in[1], Tensor())};
          },
          kClose);
      // Gradients of x, w and bias (the bias gradient is sum_axes over rows).
      add("linear_backward_" + dt_name(dt) + "_" + shape,
          [=](Gen& g) {
            return Tensors{rg(g.uniform({batch, fin}, dt)), rg(g.uniform({fout, fin}, dt)),
                           rg(g.uniform({fout}, dt)), g.uniform({batch, fout}, dt)};
          },
          [](const Tensors& in) {
            Tensor y = linear(in[0], in[1], in[2]);
            weighted_sum(y, in[3]).backward();
            return Tensors{y, in[0].grad(), in[1].grad(), in[2].grad()};
          },
          kClose);
    }
  add("matmul_backward", [](Gen& g) {
        return Tensors{rg(g.uniform({7, 33})), rg(g.uniform({33, 5})), g.uniform({7, 5})};
      },
      [](const Tensors& in) {
        Tensor y = matmul(in[0], in[1]);
        weighted_sum(y, in[2]).backward();
        return Tensors{y, in[0].grad(), in[1].grad()};
      },
      kClose);

  // -- gradients through broadcasting binary ops, relu, mean, reshape --
  for (const BinOp& op : bin_ops)
    for (const auto& [sa, sb] : std::vector<std::pair<Shape, Shape>>{
             {{3, 1, 5}, {4, 5}}, {{257, 33}, {33}}, {{7, 1}, {1}}})
      add(std::string(op.name) + "_backward_" + shape_name(sa) + "_" + shape_name(sb),
          [=](Gen& g) {
            const Shape so = broadcast_shapes(sa, sb, "test");
            return Tensors{rg(g.uniform(sa)), rg(g.nonzero(sb)), g.uniform(so)};
          },
          [fn = op.fn](const Tensors& in) {
            Tensor y = fn(in[0], in[1]);
            weighted_sum(y, in[2]).backward();
            return Tensors{y, in[0].grad(), in[1].grad()};
          },
          kClose);
  // relu's gradient is a mask; inputs are exact multiples of 0.5 (zeros included), so the
  // forward, the mask and the gradient are all bit-identical.
  add("relu_backward", [](Gen& g) { return Tensors{rg(g.levels({257, 33})), g.uniform({257, 33})}; },
      [](const Tensors& in) {
        Tensor y = relu(in[0]);
        weighted_sum(y, in[1]).backward();
        return Tensors{y, in[0].grad()};
      },
      kExact);
  add("mean_backward", [](Gen& g) { return Tensors{rg(g.uniform({7, 33})), g.uniform({33})}; },
      [](const Tensors& in) {
        Tensor y = mean(in[0], {0});
        weighted_sum(y, in[1]).backward();
        return Tensors{y, in[0].grad()};
      },
      kClose);
  add("reshape_backward", [](Gen& g) { return Tensors{rg(g.uniform({4, 6})), rg(g.uniform({8}))}; },
      [](const Tensors& in) {
        Tensor y = mul(reshape(in[0], {3, 8}), in[1]);
        sum(y).backward();
        return Tensors{y, in[0].grad(), in[1].grad()};
      },
      kClose);

  // -- cross-entropy: ops (loss and logits gradient) and the raw kernels --
  for (DType dt : {F32, F64})
    for (const auto& [n, c, range] : std::vector<std::tuple<int64_t, int64_t, double>>{
             {7, 10, 3.0}, {1000, 10, 3.0}, {33, 257, 3.0}, {1, 1, 3.0}, {5, 1000, 3.0},
             {64, 10, 60.0}}) {
      const std::string shape = dt_name(dt) + "_" + std::to_string(n) + "x" + std::to_string(c) +
                                (range > 10 ? "_large_logits" : "");
      add("cross_entropy_" + shape,
          [=](Gen& g) { return Tensors{rg(g.uniform({n, c}, dt, -range, range)), g.labels(n, c)}; },
          [](const Tensors& in) {
            Tensor loss = cross_entropy(in[0], in[1]);
            loss.backward();
            return Tensors{loss, in[0].grad()};
          },
          kClose);
      add("cross_entropy_seeded_" + shape,  // a loss gradient other than 1 reaches the logits
          [=](Gen& g) { return Tensors{rg(g.uniform({n, c}, dt, -range, range)), g.labels(n, c)}; },
          [](const Tensors& in) {
            Tensor loss = cross_entropy(in[0], in[1]);
            loss.backward(Tensor::full(loss.shape(), -0.75, loss.dtype(), loss.device()));
            return Tensors{loss, in[0].grad()};
          },
          kClose);
      add("cross_entropy_raw_" + shape,
          [=](Gen& g) { return Tensors{g.uniform({n, c}, dt, -range, range), g.labels(n, c)}; },
          [](const Tensors& in) {
            const Tensor& x = in[0];
            Tensor losses = empty_like(x, {x.size(0)}, x.dtype());
            Tensor probs = empty_like(x, x.shape(), x.dtype());
            Tensor grad = empty_like(x, x.shape(), x.dtype());
            // The CPU takes the scale g_loss / N; CUDA reads g_loss on the device.
            const double g_loss = 2.5;
            if (on_cuda(x)) {
              cross_entropy_forward_cuda(x, in[1], losses, probs);
              cross_entropy_backward_cuda(probs, in[1],
                                          Tensor::full({1}, g_loss, x.dtype(), Device::CUDA), grad);
            } else {
              cross_entropy_forward_cpu(x, in[1], losses, probs);
              cross_entropy_backward_cpu(probs, in[1], g_loss / static_cast<double>(x.size(0)),
                                         grad);
            }
            return Tensors{losses, probs, grad};
          },
          kClose);
    }
  // -- a Transformer's ops: batched matmul, softmax, layer norm, transpose (forward and all
  // gradients, through a random projection so softmax's gradient is not trivially zero) --
  for (DType dt : {F32, F64}) {
    const std::string t = dt_name(dt);
    using BmmCase = std::tuple<std::string, Shape, Shape, bool>;
    for (const auto& [name, a, b, trans_b] : std::vector<BmmCase>{
             {"bmm_attention", {8, 49, 16}, {8, 16, 49}, false},
             {"bmm_qk_trans_b", {8, 49, 16}, {8, 49, 16}, true},
             {"bmm_odd", {3, 1, 7}, {3, 7, 1}, false},
             {"bmm_empty_k", {2, 3, 0}, {2, 0, 4}, false}}) {
      const Shape out{a[0], a[1], trans_b ? b[1] : b[2]};
      add(name + "_" + t,
          [=](Gen& g) {
            return Tensors{rg(g.uniform(a, dt)), rg(g.uniform(b, dt)), g.uniform(out, dt)};
          },
          [tb = trans_b](const Tensors& in) {
            Tensor y = bmm(in[0], in[1], tb);
            weighted_sum(y, in[2]).backward();
            return Tensors{y, in[0].grad(), in[1].grad()};
          },
          kClose);
    }
    for (const Shape& shape : std::vector<Shape>{{6, 49, 49}, {3, 1}, {2, 1000}, {4, 0, 5}}) {
      add("softmax_" + shape_name(shape) + "_" + t,
          [=](Gen& g) { return Tensors{rg(g.uniform(shape, dt, -6.0, 6.0)), g.uniform(shape, dt)}; },
          [](const Tensors& in) {
            Tensor y = softmax(in[0]);
            weighted_sum(y, in[1]).backward();
            return Tensors{y, in[0].grad()};
          },
          kClose);
    }
    for (const Shape& shape : std::vector<Shape>{{37, 64}, {5, 3, 1000}, {2, 1}}) {
      const Shape d{shape.back()};
      add("layer_norm_" + shape_name(shape) + "_" + t,
          [=](Gen& g) {
            return Tensors{rg(g.uniform(shape, dt, -3.0, 3.0)), rg(g.uniform(d, dt, 0.5, 1.5)),
                           rg(g.uniform(d, dt)), g.uniform(shape, dt)};
          },
          [](const Tensors& in) {
            Tensor y = layer_norm(in[0], in[1], in[2]);
            weighted_sum(y, in[3]).backward();
            return Tensors{y, in[0].grad(), in[1].grad(), in[2].grad()};
          },
          kClose);
    }
    add("transpose_" + t,
        [=](Gen& g) { return Tensors{rg(g.uniform({3, 4, 5}, dt)), g.uniform({5, 4, 3}, dt)}; },
        [](const Tensors& in) {
          Tensor y = transpose(in[0], 0, -1);
          weighted_sum(y, in[1]).backward();
          return Tensors{y, in[0].grad()};
        },
        kExact);
  }
  // An F32 chain linear -> cross_entropy, and a float64 two-layer MLP through relu and dropout.
  // (In F32, GEMM rounding could flip a relu for a pre-activation within ~1e-7 of 0; in F64 the
  // chance is negligible, so the deep chain runs in F64.)
  add("linear_cross_entropy_backward_f32",
      [](Gen& g) {
        return Tensors{rg(g.uniform({64, 33})), rg(g.uniform({10, 33})), rg(g.uniform({10})),
                       g.labels(64, 10)};
      },
      [](const Tensors& in) {
        Tensor loss = cross_entropy(linear(in[0], in[1], in[2]), in[3]);
        loss.backward();
        return Tensors{loss, in[0].grad(), in[1].grad(), in[2].grad()};
      },
      kClose);
  add("mlp_relu_dropout_backward_f64",
      [](Gen& g) {
        return Tensors{rg(g.uniform({33, 57}, F64)), rg(g.uniform({16, 57}, F64)),
                       rg(g.uniform({16}, F64)),     rg(g.uniform({10, 16}, F64)),
                       rg(g.uniform({10}, F64)),     g.labels(33, 10)};
      },
      [](const Tensors& in) {
        Tensor h = relu(linear(in[0], in[1], in[2]));
        h = dropout(h, 0.25f, 1234, kStreamDropout + 1);
        Tensor loss = cross_entropy(linear(h, in[3], in[4]), in[5]);
        loss.backward();
        return Tensors{loss, in[0].grad(), in[1].grad(), in[2].grad(), in[3].grad(), in[4].grad()};
      },
      kClose);

  // -- dropout / apply_mask: masks and outputs are bit-identical --
  for (DType dt : {F32, F64})
    for (const Shape& s : std::vector<Shape>{{1000}, {257, 33}, {7}, {1}, {0, 5}})
      for (float p : {0.1f, 0.5f, 0.9f, 1.0f}) {
        const std::string name = dt_name(dt) + "_" + shape_name(s) + "_p" +
                                 std::to_string(std::lround(p * 100));
        // ops.h dropout: the output, and through backward the mask times the scale.
        add("dropout_" + name,
            [=](Gen& g) {
              return Tensors{rg(g.uniform(s, dt)), g.uniform(s, dt),
                             Tensor::from_vector<int64_t>({static_cast<int64_t>(g.u64() >> 1)}, {1})};
            },
            [=](const Tensors& in) {
              const uint64_t seed = static_cast<uint64_t>(in[2].to_vector<int64_t>()[0]);
              Tensor y = dropout(in[0], p, seed, kStreamDropout + 7);
              weighted_sum(y, in[1]).backward();
              return Tensors{y, in[0].grad()};
            },
            kExact);
        // dropout_cuda itself, including the mask it writes; a stream with high bits set.
        add("dropout_raw_" + name,
            [=](Gen& g) {
              return Tensors{g.uniform(s, dt),
                             Tensor::from_vector<int64_t>({static_cast<int64_t>(g.u64() >> 1)}, {1})};
            },
            [=](const Tensors& in) {
              const uint64_t seed = static_cast<uint64_t>(in[1].to_vector<int64_t>()[0]);
              const Tensor& x = in[0];
              Tensor out = empty_like(x, x.shape(), x.dtype());
              Tensor mask = empty_like(x, x.shape(), DType::U8);
              by_device(x, dropout_cpu, dropout_cuda, x, p, seed ^ 0x9e3779b97f4a7c15ull,
                        uint64_t{kStreamTargeted} + (uint64_t{0xabcdef} << 20), out, mask);
              return Tensors{out, mask};
            },
            kExact);
      }
  for (DType dt : {F32, F64})
    for (const Shape& s : std::vector<Shape>{{1000}, {257, 33}, {0, 5}}) {
      add("apply_mask_" + dt_name(dt) + "_" + shape_name(s),
          [=](Gen& g) { return Tensors{rg(g.uniform(s, dt)), g.mask(s), g.uniform(s, dt)}; },
          [](const Tensors& in) {
            Tensor y = apply_mask(in[0], in[1], 1.25);
            weighted_sum(y, in[2]).backward();
            return Tensors{y, in[0].grad()};
          },
          kExact);
      add("apply_mask_raw_" + dt_name(dt) + "_" + shape_name(s),
          [=](Gen& g) { return Tensors{g.uniform(s, dt), g.mask(s)}; },
          [](const Tensors& in) {
            Tensor out = empty_like(in[0], in[0].shape(), in[0].dtype());
            by_device(in[0], apply_mask_cpu, apply_mask_cuda, in[0], in[1], 1.0 / 0.7, out);
            return Tensors{out};
          },
          kExact);
    }

  // -- optimizer updates: three steps each, so both first-step and steady-state paths run --
  struct SgdCase {
    const char* name;
    SgdParams p;
  };
  for (const SgdCase& sc : {SgdCase{"plain", {0.1f, 0.0f, 0.0f, false}},
                            SgdCase{"momentum_wd", {0.05f, 0.9f, 1e-4f, false}},
                            SgdCase{"nesterov", {0.05f, 0.9f, 5e-4f, true}}})
    for (const Shape& s : std::vector<Shape>{{257, 33}, {7}, {0}})
      add(std::string("sgd_") + sc.name + "_" + shape_name(s),
          [=](Gen& g) {
            return Tensors{g.uniform(s), g.uniform(s),
                           sc.p.momentum != 0.0f ? Tensor::zeros(s) : Tensor()};
          },
          [=](const Tensors& in) {
            for (int step = 0; step < 3; ++step)
              by_device(in[0], sgd_update_cpu, sgd_update_cuda, in[0], in[1], in[2], sc.p,
                        step == 0);
            return Tensors{in[0], in[2]};
          },
          kClose);
  // All parameters in one launch: three tensors (one empty, one spanning several chunks).
  for (const SgdCase& sc : {SgdCase{"plain", {0.1f, 0.0f, 0.0f, false}},
                            SgdCase{"nesterov", {0.05f, 0.9f, 5e-4f, true}}})
    add(std::string("sgd_multi_") + sc.name,
        [=](Gen& g) {
          Tensors t;
          for (const Shape& s : std::vector<Shape>{{257, 33}, {0}, {7}, {5000}})
            for (Tensor x : {g.uniform(s), g.uniform(s), Tensor::zeros(s)}) t.push_back(x);
          return t;
        },
        [=](const Tensors& in) {
          std::vector<Tensor> w, gr, buf;
          for (size_t i = 0; i < in.size(); i += 3) {
            w.push_back(in[i]);
            gr.push_back(in[i + 1]);
            buf.push_back(in[i + 2]);
          }
          for (int step = 0; step < 3; ++step) {
            if (in[0].is_cuda()) {
              sgd_update_multi_cuda(w, gr, buf, sc.p, step == 0);
            } else {
              for (size_t i = 0; i < w.size(); ++i)
                sgd_update_cpu(w[i], gr[i], buf[i], sc.p, step == 0);
            }
          }
          Tensors out = w;
          out.insert(out.end(), buf.begin(), buf.end());
          return out;
        },
        kClose);
  for (bool decoupled : {false, true})
    for (const Shape& s : std::vector<Shape>{{257, 33}, {7}, {0}})
      add(std::string(decoupled ? "adamw_" : "adam_") + shape_name(s),
          [=](Gen& g) {
            return Tensors{g.uniform(s), g.uniform(s), Tensor::zeros(s), Tensor::zeros(s)};
          },
          [=](const Tensors& in) {
            for (int64_t step = 1; step <= 3; ++step) {
              const AdamParams p{1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, decoupled, step};
              by_device(in[0], adam_update_cpu, adam_update_cuda, in[0], in[1], in[2], in[3], p);
            }
            return Tensors{in[0], in[2], in[3]};
          },
          kClose);
  return cs;
}

const std::vector<OpCase>& cases() {
  static const std::vector<OpCase> all = build_cases();
  return all;
}

// ---- running and comparing -------------------------------------------------------------------

// Copies of the CPU inputs on `d`, each with its own storage and the same requires_grad.
Tensors copies_on(const Tensors& in, Device d) {
  Tensors out;
  for (const Tensor& t : in) {
    if (!t.defined()) {
      out.push_back(Tensor());
      continue;
    }
    Tensor c = d == Device::CPU ? t.clone() : t.to(d);
    if (t.requires_grad()) c.set_requires_grad(true);
    out.push_back(c);
  }
  return out;
}

// Element i is close when |got_i - want_i| <= rtol * (|want_i| + floor * max|want|): relative,
// with a floor at a share of the tensor's scale so entries that cancel to near zero are judged
// against the magnitudes that produced them. F32 kernels round differently anywhere (GEMM and
// exp orders): the floor is the whole scale. F64 kernels compute in double like the CPU (warp
// sums, cuBLAS DGEMM, exp/log within an ulp), so they agree to 1e-11 (as the conv tests) down
// to a tenth of the scale (a long dot product's summation order moves an entry near 0 by
// ~1e-13 of it); a kernel computing in float misses by ~1e-7.
struct Tolerance {
  double rtol, floor;
};
Tolerance close_tolerance(DType dt) {
  return dt == F64 ? Tolerance{1e-11, 1e-1} : Tolerance{1e-5, 1.0};
}

// Element i matches when both are NaN, or equal, or (kClose) within close_tolerance.
void expect_match(const Tensor& want, const Tensor& got, Match match, const std::string& what) {
  ASSERT_EQ(want.defined(), got.defined()) << what;
  if (!want.defined()) return;
  ASSERT_EQ(want.shape(), got.shape()) << what << ": " << want.describe() << " vs "
                                       << got.describe();
  ASSERT_EQ(want.dtype(), got.dtype()) << what;
  EXPECT_EQ(want.device(), Device::CPU) << what;
  EXPECT_EQ(got.device(), Device::CUDA) << what;
  const std::vector<double> w = want.to_double_vector(), g = got.to_double_vector();
  const Tolerance tol = close_tolerance(want.dtype());
  double scale = 0.0;
  for (double v : w)
    if (std::isfinite(v)) scale = std::max(scale, std::fabs(v));
  int bad = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const bool both_nan = std::isnan(w[i]) && std::isnan(g[i]);
    bool ok = both_nan || w[i] == g[i];
    if (!ok && match == kClose && std::isfinite(w[i]) && std::isfinite(g[i]))
      ok = std::fabs(g[i] - w[i]) <= tol.rtol * (std::fabs(w[i]) + tol.floor * scale);
    if (!ok && ++bad <= 5)
      ADD_FAILURE() << what << "[" << i << "]: cpu " << std::setprecision(17) << w[i] << ", cuda "
                    << g[i] << (match == kClose ? " (close)" : " (exact)");
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << w.size() << " elements differ";
}

class CudaOps : public ::testing::TestWithParam<OpCase> {};

TEST_P(CudaOps, CpuAndCudaAgree) {
  if (!tdrop::cuda_available()) GTEST_SKIP() << "no CUDA GPU: CPU<->CUDA comparison skipped";
  const OpCase& c = GetParam();
  const uint64_t seed = draw_seed();
  SCOPED_TRACE(c.name + ", " + seed_note(seed));
  Gen gen(seed);
  const Tensors base = c.make(gen);
  const Tensors want = c.run(copies_on(base, Device::CPU));
  const Tensors got = c.run(copies_on(base, Device::CUDA));
  device_synchronize();
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i)
    expect_match(want[i], got[i], c.match, c.name + " output " + std::to_string(i));
}

std::string case_name(const ::testing::TestParamInfo<OpCase>& info) {
  std::string n = info.param.name;
  for (char& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaOps, ::testing::ValuesIn(cases()), case_name);

// ---- allocator and error handling ------------------------------------------------------------

// After a few warm-up steps of a training-like loop (forward, backward, SGD), the caching
// allocator serves every allocation from its cache: no new cudaMalloc calls.
TEST(CudaOpsAllocator, TrainingLoopStopsCallingCudaMalloc) {
  if (!tdrop::cuda_available()) GTEST_SKIP() << "no CUDA GPU: caching-allocator test skipped";
  const uint64_t seed = draw_seed();
  SCOPED_TRACE(seed_note(seed));
  Gen gen(seed);
  const Device cu = Device::CUDA;
  const Tensor x = gen.uniform({64, 57}).to(cu), y = gen.labels(64, 10).to(cu);
  Tensors params = {gen.uniform({32, 57}).to(cu), gen.uniform({32}).to(cu),
                    gen.uniform({10, 32}).to(cu), gen.uniform({10}).to(cu)};
  Tensors bufs;
  for (Tensor& p : params) {
    p.set_requires_grad(true);
    bufs.push_back(Tensor::zeros(p.shape(), p.dtype(), cu));
  }
  const SgdParams sgd{0.05f, 0.9f, 1e-4f, false};
  auto step = [&](int i) {
    for (Tensor& p : params) p.set_grad(Tensor());
    Tensor h = relu(linear(x, params[0], params[1]));
    h = dropout(h, 0.5f, seed, kStreamDropout + static_cast<uint64_t>(i));
    Tensor loss = cross_entropy(linear(h, params[2], params[3]), y);
    loss.backward();
    NoGradGuard ng;
    for (size_t k = 0; k < params.size(); ++k)
      sgd_update_cuda(params[k], params[k].grad(), bufs[k], sgd, i == 0);
    EXPECT_TRUE(std::isfinite(loss.item()));
  };
  for (int i = 0; i < 5; ++i) step(i);
  device_synchronize();
  const int64_t before = cuda_allocator_stats().malloc_calls;
  for (int i = 5; i < 25; ++i) step(i);
  device_synchronize();
  EXPECT_EQ(cuda_allocator_stats().malloc_calls, before)
      << "steady-state training steps still call cudaMalloc";
}

// With the verdict deferred, nothing waits for the GPU: the first bad row (or -1) comes back as
// a device tensor, and the message the trainer builds from it is the CPU's.
TEST(CudaOpsCrossEntropy, DeferredLabelCheckReturnsTheFirstBadRowWithoutWaiting) {
  if (!tdrop::cuda_available()) GTEST_SKIP() << "no CUDA GPU: deferred label check skipped";
  const uint64_t seed = draw_seed();
  SCOPED_TRACE(seed_note(seed));
  Gen gen(seed);
  std::vector<int64_t> labels(777, 3);
  const Tensor logits = gen.uniform({777, 10}).to(Device::CUDA);
  const Tensor good = Tensor::from_vector(labels, {777}).to(Device::CUDA);
  Tensor bad;
  const int64_t syncs = host_stream_syncs();
  cross_entropy(logits, good, &bad);
  EXPECT_EQ(host_stream_syncs(), syncs) << "the deferred label check waited for the GPU";
  EXPECT_EQ(bad.to_vector<int64_t>(), std::vector<int64_t>{-1});
  labels[400] = 10;
  labels[776] = -2;
  const Tensor y = Tensor::from_vector(labels, {777}).to(Device::CUDA);
  const int64_t before = host_stream_syncs();
  Tensor loss = cross_entropy(logits, y, &bad);  // no throw: the verdict is the caller's
  EXPECT_EQ(host_stream_syncs(), before) << "the deferred label check waited for the GPU";
  const int64_t row = bad.to_vector<int64_t>()[0];
  EXPECT_EQ(row, 400);
  std::string cpu_msg;
  try {
    cross_entropy(logits.to(Device::CPU), y.to(Device::CPU));
  } catch (const Error& e) {
    cpu_msg = e.what();
  }
  EXPECT_EQ(cross_entropy_label_error(labels[400], row, logits.shape()), cpu_msg);

  // Until the caller reads the verdict, training goes on with this loss: the bad rows must add
  // nothing (loss 0, zero gradient), not whatever their memory held. So the outputs are put on
  // stale NaN: with the cache emptied, the only free blocks of their sizes ([777] losses,
  // [777, 10] probabilities and gradient) are NaN-filled ones, several of each in case another
  // allocation of a near size takes one first.
  Tensor lg = logits.clone();
  lg.set_requires_grad(true);
  tdrop::cuda_empty_cache();
  {
    std::vector<Tensor> stale;
    for (int copies = 0; copies < 4; ++copies)
      for (int64_t n : {int64_t{777}, int64_t{7770}})
        stale.push_back(Tensor::full({n}, std::nan(""), DType::F32, Device::CUDA));
  }
  ASSERT_GE(tdrop::cuda_allocator_stats().bytes_cached, 4 * (777 + 7770) * 4)
      << "the NaN blocks did not go back to the cache";
  Tensor l2 = cross_entropy(lg, y, &bad);
  l2.backward();
  std::vector<int64_t> fixed = labels;
  fixed[400] = fixed[776] = 3;
  Tensor lc = logits.to(Device::CPU);
  lc.set_requires_grad(true);
  Tensor lcpu = cross_entropy(lc, Tensor::from_vector(fixed, {777}));
  lcpu.backward();
  const std::vector<float> g = lg.grad().to_vector<float>(), gc = lc.grad().to_vector<float>();
  for (int64_t r = 0; r < 777; ++r)
    for (int64_t j = 0; j < 10; ++j) {
      const size_t i = static_cast<size_t>(r * 10 + j);
      if (r == 400 || r == 776) EXPECT_EQ(g[i], 0.0f) << "bad row " << r << ", column " << j;
      else ASSERT_NEAR(g[i], gc[i], 1e-6f) << "row " << r << ", column " << j;
    }
  // The loss is the mean over all 777 rows with the bad ones counted as 0.
  const float per_row_cpu = lcpu.item() * 777;
  const std::vector<float> logits_cpu = logits.to_vector<float>();
  double bad_rows_loss = 0;
  for (int64_t r : {int64_t{400}, int64_t{776}}) {
    double mx = -1e30, z = 0;
    for (int j = 0; j < 10; ++j) mx = std::max<double>(mx, logits_cpu[r * 10 + j]);
    for (int j = 0; j < 10; ++j) z += std::exp(logits_cpu[r * 10 + j] - mx);
    bad_rows_loss += std::log(z) + mx - logits_cpu[r * 10 + 3];
  }
  EXPECT_NEAR(l2.item(), (per_row_cpu - bad_rows_loss) / 777, 1e-5);
}

// Tensor::full fills on the device: the backward pass seeds its gradient with it every step.
TEST(CudaOpsFill, FullFillsEveryDtypeWithoutWaiting) {
  if (!tdrop::cuda_available()) GTEST_SKIP() << "no CUDA GPU: Tensor::full on CUDA skipped";
  const int64_t before = host_stream_syncs();
  const Tensor f = Tensor::full({3, 1001}, -2.75, DType::F32, Device::CUDA);
  const Tensor d = Tensor::full({5}, 1.0 / 3.0, DType::F64, Device::CUDA);
  const Tensor i = Tensor::full({7}, -1, DType::I64, Device::CUDA);
  const Tensor u = Tensor::full({130}, 200, DType::U8, Device::CUDA);
  const Tensor e = Tensor::full({0, 4}, 9, DType::F32, Device::CUDA);
  EXPECT_EQ(host_stream_syncs(), before) << "Tensor::full on CUDA waited for the GPU";
  EXPECT_EQ(f.to_vector<float>(), std::vector<float>(3003, -2.75f));
  EXPECT_EQ(d.to_vector<double>(), std::vector<double>(5, 1.0 / 3.0));
  EXPECT_EQ(i.to_vector<int64_t>(), std::vector<int64_t>(7, -1));
  EXPECT_EQ(u.to_vector<uint8_t>(), std::vector<uint8_t>(130, 200));
  EXPECT_EQ(e.numel(), 0);
}

// Operands that do not multiply, or of mixed dtypes, are errors naming them on both paths (the
// CPU path once handed them to OpenBLAS unchecked).
TEST(GemmChecks, BadOperandsAreErrorsOnEveryDevice) {
  for (Device d : {Device::CPU, Device::CUDA}) {
    if (d == Device::CUDA && !tdrop::cuda_available()) continue;  // the CPU half runs everywhere
    SCOPED_TRACE(device_name(d));
    const Tensor a = Tensor::zeros({2, 3}, DType::F32, d), b = Tensor::zeros({4, 5}, DType::F32, d);
    const Tensor c = Tensor::zeros({2, 5}, DType::F32, d);
    const Tensor b64 = Tensor::zeros({3, 5}, DType::F64, d);
    auto gemm_on = [&](const Tensor& x, const Tensor& y, const Tensor& z) {
      if (d == Device::CPU) gemm_cpu(false, false, 1.0, x, y, 0.0, z);
      else gemm_cuda(false, false, 1.0, x, y, 0.0, z);
    };
    expect_error([&] { gemm_on(a, b, c); }, {"gemm", "[2, 3]", "[4, 5]", "[2, 5]"});
    expect_error([&] { gemm_on(a, b64, c); }, {"gemm: dtypes F32, F64, F32"});
  }
}

// Conversions of floats outside an integer type's range (and NaN) give the CPU's values:
// saturated, NaN as 0, also from a strided source.
TEST(CudaOpsConvert, FloatsOutsideAnIntegerRangeMatchTheCpu) {
  if (!tdrop::cuda_available()) GTEST_SKIP() << "no CUDA GPU: conversion on CUDA skipped";
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor x = Tensor::from_vector<float>(
      {std::nanf(""), 300.0f, -5.0f, 1e30f, -1e30f, 2.9f, -inf, inf, 9.3e18f, -0.7f}, {2, 5});
  for (const Tensor& src : {x, x.transpose(0, 1)})
    for (DType t : {DType::U8, DType::I64}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + (src.is_contiguous() ? "" : ", strided"));
      const Tensor cpu = src.to(t), gpu = src.to(Device::CUDA).to(t);
      if (t == DType::U8) {
        EXPECT_EQ(gpu.to_vector<uint8_t>(), cpu.to_vector<uint8_t>());
      } else {
        EXPECT_EQ(gpu.to_vector<int64_t>(), cpu.to_vector<int64_t>());
      }
    }
  EXPECT_EQ(Tensor::full({3}, std::nan(""), DType::I64, Device::CUDA).to_vector<int64_t>(),
            std::vector<int64_t>(3, 0));
}

// A label outside [0, C) is reported as a tdrop::Error with the CPU's message (the first bad
// row), never as an out-of-bounds read; the GPU stays usable afterwards.
TEST(CudaOpsCrossEntropy, BadLabelThrowsTheCpuError) {
  if (!tdrop::cuda_available()) GTEST_SKIP() << "no CUDA GPU: CPU<->CUDA comparison skipped";
  const uint64_t seed = draw_seed();
  SCOPED_TRACE(seed_note(seed));
  Gen gen(seed);
  const Tensor logits = gen.uniform({4, 5});
  for (const std::vector<int64_t>& bad : {std::vector<int64_t>{0, 7, 1, -1},
                                          std::vector<int64_t>{0, 1, -3, 9},
                                          std::vector<int64_t>{5, 0, 0, 0}}) {
    const Tensor labels = Tensor::from_vector(bad, {4});
    std::string cpu_msg, cuda_msg;
    try {
      cross_entropy(logits, labels);
    } catch (const Error& e) {
      cpu_msg = e.what();
    }
    try {
      cross_entropy(logits.to(Device::CUDA), labels.to(Device::CUDA));
    } catch (const Error& e) {
      cuda_msg = e.what();
    }
    EXPECT_FALSE(cpu_msg.empty()) << "the CPU accepted a bad label";
    EXPECT_FALSE(cuda_msg.empty()) << "CUDA accepted a bad label";
    EXPECT_EQ(cuda_msg, cpu_msg);
  }
  // A large batch with one bad label far down: the smallest bad row is reported.
  std::vector<int64_t> many(3000, 2);
  many[2500] = 11;
  many[2999] = -4;
  EXPECT_THROW(
      {
        try {
          cross_entropy(gen.uniform({3000, 5}).to(Device::CUDA),
                        Tensor::from_vector(many, {3000}).to(Device::CUDA));
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("label 11 at row 2500"), std::string::npos)
              << e.what();
          throw;
        }
      },
      Error);
  // The device is fine afterwards.
  const Tensor loss = cross_entropy(logits.to(Device::CUDA),
                                    Tensor::from_vector<int64_t>({0, 1, 2, 3}, {4}).to(Device::CUDA));
  EXPECT_TRUE(std::isfinite(loss.item()));
}

}  // namespace
}  // namespace tdrop
