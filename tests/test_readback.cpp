// Readback: device buffers copied to the host behind the queued work, looked at later.
#include <gtest/gtest.h>

#include <random>

#include "core/device.h"
#include "core/readback.h"
#include "core/tensor.h"
#include "tests/expect_error.h"
#include "tests/grad_check.h"

namespace tdrop::testing {
namespace {

void round_trip(Device d) {
  std::mt19937_64 rng(fresh_seed());
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Readback rb;
  for (int round = 0; round < 3; ++round) {  // reused, growing and shrinking
    const int64_t n = 1 + static_cast<int64_t>(rng() % 3000);
    std::vector<float> a(static_cast<size_t>(n));
    for (float& x : a) x = u(rng);
    std::vector<int64_t> b(static_cast<size_t>(round * 7));
    for (int64_t& x : b) x = static_cast<int64_t>(rng());
    const Tensor ta = Tensor::from_vector(a, {n}, d);
    const Tensor tb = Tensor::from_vector(b, {static_cast<int64_t>(b.size())}, d);
    rb.start({ta, tb});
    EXPECT_EQ(rb.pending(), d == Device::CUDA);
    rb.wait();
    EXPECT_FALSE(rb.pending());
    EXPECT_EQ(rb.part<float>(0), a);
    EXPECT_EQ(rb.part<int64_t>(1), b);
  }
}

TEST(Readback, CpuTensorsAreCopiedAtOnce) { round_trip(Device::CPU); }

TEST(Readback, CudaTensorsArriveAfterWait) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU: Readback CUDA test skipped";
  round_trip(Device::CUDA);
}

TEST(Readback, StartingTwiceWithoutWaitingIsAnError) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU: only CUDA copies stay pending";
  Readback rb;
  const Tensor t = Tensor::zeros({4}).to(Device::CUDA);
  rb.start({t});
  expect_error([&] { rb.start({t}); }, {"Readback", "never waited"});
  rb.wait();
}

TEST(Readback, TensorsOnTwoDevicesAreAnError) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU: needs a tensor on each device";
  Readback rb;
  expect_error([&] { rb.start({Tensor::zeros({2}), Tensor::zeros({2}).to(Device::CUDA)}); },
               {"Readback", "different devices"});
}

}  // namespace
}  // namespace tdrop::testing
