// Batch normalisation over the channels of NCHW activations (Ioffe & Szegedy 2015):
//   y = (x - mean[c]) * invstd[c] * gamma[c] + beta[c],  invstd = 1 / sqrt(var + eps).
// Training uses the batch's statistics (biased variance) and folds them into the running
// statistics with `momentum`, using the unbiased variance as PyTorch does:
//   running = (1 - momentum) * running + momentum * batch_stat.
// Evaluation uses the running statistics. Both return the (mean, invstd) they normalised with,
// which is all the backward pass needs. Sums accumulate in double on CPU and CUDA.
#pragma once
#include "core/tensor.h"

namespace tdrop {

// What follows the normalisation in the same pass over y (a residual block's "add the
// shortcut, then ReLU"): y = relu(bn(x) + residual), each part optional (an undefined residual
// adds nothing). Each step rounds to the dtype as the separate add and relu ops do, so the
// fused form gives the same bits as the composed one and saves their passes over memory.
struct BnEpilogue {
  Tensor residual;  // undefined, or contiguous like x
  bool relu = false;
};

// x, y [N, C, H, W]; gamma, beta, running_mean, running_var, mean, invstd [C]; all contiguous,
// one floating dtype, on the function's device. Training needs N*H*W >= 2.
void batch_norm2d_train_cpu(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var,
                            double momentum, double eps, const Tensor& y, const Tensor& mean,
                            const Tensor& invstd, const BnEpilogue& then = {});
void batch_norm2d_train_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var,
                             double momentum, double eps, const Tensor& y, const Tensor& mean,
                             const Tensor& invstd, const BnEpilogue& then = {});
void batch_norm2d_eval_cpu(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                           const Tensor& running_mean, const Tensor& running_var, double eps,
                           const Tensor& y, const Tensor& mean, const Tensor& invstd,
                           const BnEpilogue& then = {});
void batch_norm2d_eval_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var, double eps,
                            const Tensor& y, const Tensor& mean, const Tensor& invstd,
                            const BnEpilogue& then = {});

// Gradients for x, gamma and beta. With batch_stats (training) mean and invstd depend on x:
//   gx = gamma * invstd * (gy - sum(gy)/M - xhat * sum(gy * xhat)/M),  M = N*H*W;
// without (evaluation) they are constants and gx = gamma * invstd * gy.
// ggamma = sum(gy * xhat), gbeta = sum(gy) over n, h, w in both cases.
void batch_norm2d_backward_cpu(const Tensor& gy, const Tensor& x, const Tensor& gamma,
                               const Tensor& mean, const Tensor& invstd, bool batch_stats,
                               const Tensor& gx, const Tensor& ggamma, const Tensor& gbeta);
void batch_norm2d_backward_cuda(const Tensor& gy, const Tensor& x, const Tensor& gamma,
                                const Tensor& mean, const Tensor& invstd, bool batch_stats,
                                const Tensor& gx, const Tensor& ggamma, const Tensor& gbeta);

}  // namespace tdrop
