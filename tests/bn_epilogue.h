// Batch norm with a fused epilogue (relu(bn(x) + residual)) against the same steps composed
// from separate ops, on one device: outputs, input gradients and running statistics of both.
// The fused form promises the composed form's bits, so callers compare with zero tolerance.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/conv_ops.h"
#include "kernels/ops.h"
#include "tests/grad_check.h"

namespace tdrop::testing {

struct BnEpilogueRun {
  // y, dx, dgamma, dbeta, dresidual (when there is one), running mean, running var.
  std::vector<Tensor> fused, composed;
};

// Inputs are drawn on the CPU from `rng` and copied to `device`. With `offset_residual` the
// residual is a view one element into its storage (off any 16-byte boundary).
inline BnEpilogueRun run_bn_epilogue(const Shape& s, DType dt, Device device, bool training,
                                     bool residual, bool relu, std::mt19937_64& rng,
                                     bool offset_residual = false) {
  const int64_t c = s[1];
  const Tensor x = random_tensor(s, rng, -2, 2, dt), r = random_tensor(s, rng, -1, 1, dt);
  const Tensor gamma = random_tensor({c}, rng, 0.5, 2, dt), beta = random_tensor({c}, rng, -1, 1, dt);
  const Tensor rm = random_tensor({c}, rng, -1, 1, dt), rv = random_tensor({c}, rng, 0.5, 2, dt);
  const Tensor weighting = random_tensor(s, rng, -1, 1, dt).to(device);
  BnEpilogueRun out;
  for (bool fused : {true, false}) {
    std::vector<Tensor> in;
    // Pointers, not copies: the residual is told apart by its address.
    for (const Tensor* tp : {&x, &gamma, &beta, &r}) {
      Tensor d = tp->clone().to(device);
      if (offset_residual && tp == &r) {
        d = Tensor::zeros({r.numel() + 1}, dt, device).narrow(0, 1, r.numel()).reshape(s);
        d.copy_(r);
        EXPECT_NE(reinterpret_cast<uintptr_t>(d.raw_data()) % 16, 0u) << "residual is aligned";
      }
      d.set_requires_grad(true);
      in.push_back(d);
    }
    Tensor run_mean = rm.clone().to(device), run_var = rv.clone().to(device);
    Tensor y;
    if (fused) {
      y = batch_norm2d(in[0], in[1], in[2], run_mean, run_var, training, 0.1, 1e-5,
                       BnEpilogue{residual ? in[3] : Tensor(), relu});
    } else {
      y = batch_norm2d(in[0], in[1], in[2], run_mean, run_var, training, 0.1, 1e-5);
      if (residual) y = add(y, in[3]);
      if (relu) y = tdrop::relu(y);
    }
    sum(mul(y, weighting)).backward();
    std::vector<Tensor>& res = fused ? out.fused : out.composed;
    res = {y, in[0].grad(), in[1].grad(), in[2].grad()};
    if (residual) res.push_back(in[3].grad());
    res.push_back(run_mean);
    res.push_back(run_var);
  }
  return out;
}

}  // namespace tdrop::testing
