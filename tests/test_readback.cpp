// Readback: device buffers copied to the host behind the queued work, looked at later; and
// Uploader, host buffers copied to the device without waiting for the queued work.
#include <gtest/gtest.h>

#include <random>

#include "core/device.h"
#include "core/readback.h"
#include "core/upload.h"
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
  expect_error([&] { rb.part<float>(0); }, {"Readback::part", "wait()"});
  expect_error([&] { rb.start({t}); }, {"Readback", "never waited"});
  rb.wait();
}

TEST(Readback, PartsOutOfRangeAreAnError) {
  Readback rb;
  rb.start({Tensor::zeros({3})});
  EXPECT_EQ(rb.part<float>(0), std::vector<float>(3, 0.0f));
  expect_error([&] { rb.part<float>(1); }, {"Readback::part", "part 1 of 1"});
}

TEST(Readback, TensorsOnTwoDevicesAreAnError) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU: needs a tensor on each device";
  Readback rb;
  expect_error([&] { rb.start({Tensor::zeros({2}), Tensor::zeros({2}).to(Device::CUDA)}); },
               {"Readback", "different devices"});
}

// More uploads than slots, of random sizes (including empty ones and ones larger than the
// slot held before): every tensor arrives intact, and the host never waits for the stream.
TEST(Uploader, CopiesArriveIntactAcrossTheRing) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU: Uploader copies to the device";
  std::mt19937_64 rng(fresh_seed());
  Uploader up(3);
  std::vector<std::vector<float>> sent;
  std::vector<Tensor> got;
  const int64_t before = host_stream_syncs();
  for (int i = 0; i < 20; ++i) {
    const int64_t n = i % 7 == 3 ? 0 : static_cast<int64_t>(rng() % 70000);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = static_cast<float>(rng() % 1000) - 500.0f;
    Tensor host = Tensor::from_vector(v, {n});
    got.push_back(up.upload(host));
    host = Tensor();  // the caller's buffer may go at once
    sent.push_back(std::move(v));
  }
  const Tensor labels = up.upload(Tensor::from_vector<int64_t>({4, -1, 9}, {3}));
  EXPECT_EQ(host_stream_syncs(), before) << "an upload waited for the whole stream";
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].device(), Device::CUDA);
    EXPECT_EQ(got[i].to_vector<float>(), sent[i]) << "upload " << i;
  }
  EXPECT_EQ(labels.to_vector<int64_t>(), (std::vector<int64_t>{4, -1, 9}));
}

TEST(Uploader, BadUsesAreErrors) {
  expect_error([] { Uploader up(0); }, {"Uploader", "at least one slot"});
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU: uploading needs one";
  Uploader up;
  const Tensor on_gpu = Tensor::zeros({2}).to(Device::CUDA);
  expect_error([&] { up.upload(on_gpu); }, {"Uploader", "expects a CPU tensor"});
}

}  // namespace
}  // namespace tdrop::testing
