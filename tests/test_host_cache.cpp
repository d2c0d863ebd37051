// The cache of large host blocks (core/host_cache.h): what it keeps, what it hands out again,
// and what it leaves to malloc.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>

#include "core/host_cache.h"
#include "core/tensor.h"

namespace tdrop {
namespace {

class HostCache : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!host_cache_enabled()) GTEST_SKIP() << "the host cache is off under AddressSanitizer";
    host_empty_cache();
    before_ = host_cache_stats();
  }
  HostCacheStats before_;
};

bool aligned64(const void* p) { return reinterpret_cast<uintptr_t>(p) % 64 == 0; }

TEST_F(HostCache, AFreedLargeBlockIsHandedOutAgain) {
  std::mt19937 rng(std::random_device{}());
  // An odd size, so that rounding to 64 bytes is part of the bookkeeping.
  const size_t bytes = kHostCacheMinBytes + 1 + rng() % 4096;
  auto* a = static_cast<unsigned char*>(host_alloc(bytes, "test"));
  ASSERT_TRUE(aligned64(a));
  std::memset(a, 0xab, bytes);  // the whole request is writable
  EXPECT_EQ(host_cache_stats().new_blocks, before_.new_blocks + 1);
  EXPECT_GE(host_cache_stats().bytes_in_use, before_.bytes_in_use + static_cast<int64_t>(bytes));
  host_free(a, bytes);
  EXPECT_GE(host_cache_stats().bytes_cached, static_cast<int64_t>(bytes));
  EXPECT_EQ(host_cache_stats().bytes_in_use, before_.bytes_in_use);

  void* b = host_alloc(bytes, "test");
  EXPECT_EQ(b, a);
  EXPECT_EQ(host_cache_stats().reused_blocks, before_.reused_blocks + 1);
  EXPECT_EQ(host_cache_stats().new_blocks, before_.new_blocks + 1);
  EXPECT_EQ(host_cache_stats().bytes_cached, 0);
  host_free(b, bytes);
}

TEST_F(HostCache, ABlockServesRequestsDownToHalfItsSize) {
  const size_t big = 4 * kHostCacheMinBytes;
  void* a = host_alloc(big, "test");
  host_free(a, big);
  void* quarter = host_alloc(big / 4, "test");  // would waste 3/4 of the block: a new one
  EXPECT_NE(quarter, a);
  void* half = host_alloc(big / 2, "test");
  EXPECT_EQ(half, a);
  host_free(half, big / 2);  // freed with the size asked: the cache knows the block's own
  host_free(quarter, big / 4);
  EXPECT_EQ(host_cache_stats().bytes_cached, static_cast<int64_t>(big + big / 4));
  EXPECT_EQ(host_cache_stats().bytes_in_use, before_.bytes_in_use);
  void* again = host_alloc(big, "test");
  EXPECT_EQ(again, a);
  host_free(again, big);
}

TEST_F(HostCache, SmallBlocksAndEmptyRequestsBypassIt) {
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{63}, kHostCacheMinBytes - 64}) {
    void* p = host_alloc(bytes, "test");
    ASSERT_NE(p, nullptr) << bytes;
    EXPECT_TRUE(aligned64(p)) << bytes;
    host_free(p, bytes);
  }
  host_free(nullptr, kHostCacheMinBytes);
  const HostCacheStats after = host_cache_stats();
  EXPECT_EQ(after.new_blocks, before_.new_blocks);
  EXPECT_EQ(after.reused_blocks, before_.reused_blocks);
  EXPECT_EQ(after.bytes_cached, 0);
}

TEST_F(HostCache, HoldsAtMostItsCapAndEmptiesOnRequest) {
  // Untouched blocks: the address space is reserved, no memory is used.
  const size_t bytes = kHostCacheMaxBytes / 2 + kHostCacheMinBytes;
  void* a = host_alloc(bytes, "test");
  void* b = host_alloc(bytes, "test");
  host_free(a, bytes);
  host_free(b, bytes);  // would take the cache past its cap: returned to the system
  EXPECT_EQ(host_cache_stats().bytes_cached, static_cast<int64_t>(bytes));
  host_empty_cache();
  EXPECT_EQ(host_cache_stats().bytes_cached, 0);
  void* c = host_alloc(kHostCacheMinBytes, "test");
  EXPECT_EQ(host_cache_stats().reused_blocks, before_.reused_blocks);
  host_free(c, kHostCacheMinBytes);
}

TEST_F(HostCache, ATensorsStorageComesBackToTheNextTensor) {
  const int64_t n = static_cast<int64_t>(kHostCacheMinBytes / sizeof(float)) + 17;
  const void* first = nullptr;
  {
    Tensor t = Tensor::full({n}, 7.0, DType::F32, Device::CPU);
    first = t.data<float>();
  }
  Tensor u = Tensor::zeros({n}, DType::F32, Device::CPU);
  EXPECT_EQ(u.data<float>(), first);
  // The block held sevens: zeros() clears what it reuses.
  const float* p = u.data<float>();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(p[i], 0.0f) << i;
}

}  // namespace
}  // namespace tdrop
