// The host emulation of CUDA (tests/cuda_emulator.h) that the fused kernels' CPU tests run on:
// its warp collectives give CUDA's results, its barriers order what they should, its scheduler
// does expose a missing barrier, and a kernel breaking CUDA's rules gets an error, not a hang.
#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/cuda_emulator.h"

namespace {

using cuda_emu::dim3;

// Runs `kernel` on one block of `threads`, expecting a std::runtime_error whose message
// contains `expected`.
template <class Kernel>
void expect_launch_error(unsigned threads, Kernel kernel, const std::string& expected) {
  try {
    cuda_emu::launch(dim3{1}, dim3{threads}, 0, kernel);
    ADD_FAILURE() << "the launch ran without an error; expected one saying \"" << expected << '"';
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos)
        << "the error \"" << e.what() << "\" does not say \"" << expected << '"';
  }
}

TEST(CudaEmulator, WarpCollectivesGiveCudasResults) {
  constexpr unsigned kThreads = 64;
  std::vector<unsigned> shfl(kThreads), up(kThreads), xr(kThreads), ballot(kThreads),
      sum(kThreads), all(kThreads), any(kThreads), half(kThreads, 7);
  cuda_emu::launch(dim3{1}, dim3{kThreads}, 0, [&] {
    const unsigned t = threadIdx.x, lane = t % 32;
    const unsigned v = 1000 * t + 17;
    shfl[t] = __shfl_sync(0xffffffffu, v, static_cast<int>(31 - lane));
    up[t] = __shfl_up_sync(0xffffffffu, v, 35);  // the low 5 bits count: 3
    xr[t] = __shfl_xor_sync(0xffffffffu, v, 5);
    ballot[t] = __ballot_sync(0xffffffffu, lane % 3 == 0);
    sum[t] = __reduce_add_sync(0xffffffffu, lane);
    all[t] = __reduce_and_sync(0xffffffffu, lane | 0x40u);
    any[t] = __reduce_or_sync(0xffffffffu, 1u << (lane % 8));
    // Only the even lanes take part.
    if (lane % 2 == 0) half[t] = __shfl_sync(0x55555555u, v, static_cast<int>(lane ^ 2));
  });
  unsigned thirds = 0;
  for (unsigned l = 0; l < 32; l += 3) thirds |= 1u << l;
  for (unsigned t = 0; t < kThreads; ++t) {
    const unsigned warp0 = t - t % 32, lane = t % 32;
    SCOPED_TRACE("thread " + std::to_string(t));
    EXPECT_EQ(shfl[t], 1000 * (warp0 + 31 - lane) + 17);
    EXPECT_EQ(up[t], lane < 3 ? 1000 * t + 17 : 1000 * (t - 3) + 17);
    EXPECT_EQ(xr[t], 1000 * (warp0 + (lane ^ 5)) + 17);
    EXPECT_EQ(ballot[t], thirds);
    EXPECT_EQ(sum[t], 496u);  // 0 + 1 + ... + 31
    EXPECT_EQ(all[t], 0x40u);
    EXPECT_EQ(any[t], 0xffu);
    EXPECT_EQ(half[t], lane % 2 == 0 ? 1000 * (warp0 + (lane ^ 2)) + 17 : 7u);
  }
}

// A write before __syncthreads is seen by every read after it, in every drawn order.
TEST(CudaEmulator, SyncthreadsOrdersWritesBeforeReads) {
  for (uint64_t order = 1; order <= 20; ++order) {
    std::vector<unsigned> seen(256);
    cuda_emu::launch(dim3{1}, dim3{256}, 0, [&] {
      __shared__ unsigned x;
      if (threadIdx.x == 0) x = static_cast<unsigned>(order);
      __syncthreads();
      seen[threadIdx.x] = x;
      __syncthreads();  // nobody writes x for the next launch before all have read it
    }, order);
    for (unsigned t = 0; t < 256; ++t) ASSERT_EQ(seen[t], order) << "thread " << t;
  }
}

// Without that barrier some reads come before the write: the scheduler does not hide a missing
// barrier behind one fixed order. The same holds for a warp that gets ahead of another between
// two named barriers through several collectives (the shape of the fused kernel's group rows).
TEST(CudaEmulator, AMissingBarrierShowsAsStaleReads) {
  int stale = 0, fresh = 0;
  for (uint64_t order = 1; order <= 5; ++order) {
    cuda_emu::launch(dim3{1}, dim3{256}, 0, [&] {
      __shared__ unsigned x;
      if (threadIdx.x == 0) x = 0;
      __syncthreads();
      if (threadIdx.x == 0) x = 1;
      (x == 1 ? fresh : stale) += 1;
      __syncthreads();
    }, order);
  }
  EXPECT_GT(stale, 0);
  EXPECT_GT(fresh, 0);
  int wrong = 0;
  for (uint64_t order = 1; order <= 5; ++order) {
    cuda_emu::launch(dim3{1}, dim3{128}, 0, [&] {
      __shared__ unsigned slot[4];  // one slot per warp, reused by every round: a race
      const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
      for (unsigned round = 0; round < 20; ++round) {
        unsigned v = warp * 100 + round;
        for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
        if (lane == 0) slot[warp] = v;
        cuda_emu::named_barrier(1, 128);
        wrong += slot[0] + slot[1] + slot[2] + slot[3] != 600 + 4 * round;
      }
    }, order);
  }
  EXPECT_GT(wrong, 0);
}

TEST(CudaEmulator, BlocksAndDynamicSharedMemory) {
  constexpr unsigned kBlocks = 5, kThreads = 64;
  std::vector<unsigned> hits(1000, 0);
  std::vector<int> aligned(kBlocks, 0), garbage(kBlocks, 0), static_garbage(kBlocks, 0);
  cuda_emu::launch(dim3{kBlocks}, dim3{kThreads}, 48, [&] {
    uint32_t* smem = static_cast<uint32_t*>(cuda_emu::dynamic_shared_memory());
    __shared__ unsigned word;
    if (threadIdx.x == 0) {
      aligned[blockIdx.x] = reinterpret_cast<uintptr_t>(smem) % 16 == 0;
      // Neither zero nor left over from the last block.
      garbage[blockIdx.x] = smem[11] == 0xA5A5A5A5u;
      static_garbage[blockIdx.x] = word == 0xA5A5A5A5u;
    }
    __syncthreads();
    if (threadIdx.x < 12) smem[threadIdx.x] = blockIdx.x;
    if (threadIdx.x == 0) word = blockIdx.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < hits.size();
         i += gridDim.x * blockDim.x)
      ++hits[i];
  });
  for (unsigned i = 0; i < hits.size(); ++i) ASSERT_EQ(hits[i], 1u) << "element " << i;
  for (unsigned b = 0; b < kBlocks; ++b) {
    EXPECT_TRUE(aligned[b]) << "block " << b;
    EXPECT_TRUE(garbage[b]) << "block " << b;
    EXPECT_TRUE(static_garbage[b]) << "block " << b;
  }
}

// An asynchronous copy's destination holds garbage from its start until the wait that
// completes its group; a wait for all but the newest group completes the older ones only.
TEST(CudaEmulator, AsyncCopiesLandAtTheirWait) {
  constexpr unsigned kThreads = 32;
  std::vector<uint32_t> src(8 * kThreads);
  for (size_t i = 0; i < src.size(); ++i) src[i] = 0x1000u + static_cast<uint32_t>(i);
  std::vector<uint32_t> before(kThreads), older(kThreads), newer(kThreads), after(kThreads);
  cuda_emu::launch(dim3{1}, dim3{kThreads}, 32 * kThreads, [&] {
    uint32_t* smem = static_cast<uint32_t*>(cuda_emu::dynamic_shared_memory());
    const unsigned t = threadIdx.x;
    smem[4 * t] = 7;
    cuda_emu::copy_async(smem + 4 * t, src.data() + 4 * t, 16);
    cuda_emu::copy_async_commit();
    cuda_emu::copy_async(smem + 4 * (kThreads + t), src.data() + 4 * (kThreads + t), 16);
    cuda_emu::copy_async_commit();
    before[t] = smem[4 * t];
    cuda_emu::copy_async_wait(1);
    older[t] = smem[4 * t];
    newer[t] = smem[4 * (kThreads + t)];
    cuda_emu::copy_async_wait(0);
    after[t] = smem[4 * (kThreads + t) + 3];
  });
  for (unsigned t = 0; t < kThreads; ++t) {
    SCOPED_TRACE("thread " + std::to_string(t));
    EXPECT_EQ(before[t], 0xA5A5A5A5u);
    EXPECT_EQ(older[t], 0x1000u + 4 * t);
    EXPECT_EQ(newer[t], 0xA5A5A5A5u);
    EXPECT_EQ(after[t], 0x1000u + 4 * (kThreads + t) + 3);
  }
  // Misuse: a copy into global memory, a misaligned one, one still in flight at the exit.
  uint32_t global[8] = {};
  expect_launch_error(32, [&] { cuda_emu::copy_async(global, src.data(), 16); },
                      "into shared memory");
  try {
    cuda_emu::launch(dim3{1}, dim3{32}, 64, [&] {
      uint32_t* smem = static_cast<uint32_t*>(cuda_emu::dynamic_shared_memory());
      if (threadIdx.x == 3) cuda_emu::copy_async(smem + 1, src.data(), 16);
    });
    ADD_FAILURE() << "a misaligned copy ran";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("thread 3"), std::string::npos) << e.what();
  }
  try {
    cuda_emu::launch(dim3{1}, dim3{32}, 512, [&] {
      uint32_t* smem = static_cast<uint32_t*>(cuda_emu::dynamic_shared_memory());
      cuda_emu::copy_async(smem + 4 * threadIdx.x, src.data(), 16);
      cuda_emu::copy_async_commit();
    });
    ADD_FAILURE() << "a launch ended with copies in flight";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("exited with 1 asynchronous copies in flight"),
              std::string::npos) << e.what();
  }
}

TEST(CudaEmulator, BrokenRulesAreErrorsNotHangs) {
  // Half the block waits at __syncthreads that the other half never reaches.
  expect_launch_error(64, [] { if (threadIdx.x < 32) __syncthreads(); },
                      "can make no progress (32 of 64 threads exited); barrier 0 holds 32 of 64");
  // Lanes of one warp in different collectives, or in the same one at two places.
  expect_launch_error(32, [] {
    if (threadIdx.x % 2) __shfl_sync(0xffffffffu, 1u, 0);
    else __ballot_sync(0xffffffffu, 1);
  }, "divergent collectives");
  expect_launch_error(32, [] {
    if (threadIdx.x % 2) __shfl_sync(0xffffffffu, 1u, 0);
    else __shfl_sync(0xffffffffu, 2u, 0);
  }, "divergent collectives");
  // A mask naming a lane that exits first.
  expect_launch_error(32, [] { if (threadIdx.x != 5) __shfl_sync(0xffffffffu, 1u, 0); },
                      "warp 0 waits in __shfl_sync (mask 0xffffffff, arrived 0xffffffdf)");
  expect_launch_error(32, [] { __ballot_sync(0x1u << ((threadIdx.x + 1) % 32), 1); },
                      "which leaves out the calling lane");
  expect_launch_error(32, [] { if (threadIdx.x < 16) __shfl_sync(0xffffu, 1u, 20); },
                      "__shfl_sync reads lane 20, which its mask 0xffff leaves out");
  // A named barrier is reached by whole warps.
  expect_launch_error(64, [] { if (threadIdx.x < 48) cuda_emu::named_barrier(1, 48); },
                      "whole warps");
  expect_launch_error(64, [] {
    if (threadIdx.x >= 16 && threadIdx.x < 48) cuda_emu::named_barrier(1, 32);
  }, "completed with 16 of warp 0's 32 threads");
  EXPECT_THROW(cuda_emu::launch(dim3{1}, dim3{33}, 0, [] {}), std::invalid_argument);
  EXPECT_THROW(cuda_emu::launch(dim3{0}, dim3{32}, 0, [] {}), std::invalid_argument);
}

}  // namespace
