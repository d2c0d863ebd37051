// parallel_for: every index once, in ranges of the requested grain, errors back on the caller,
// nested calls serial; and (with more than one CPU thread) the work really is shared.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "core/parallel.h"

namespace tdrop {
namespace {

// The ranges one call hands out, sorted.
std::vector<std::pair<int64_t, int64_t>> ranges_of(int64_t n, int64_t grain) {
  std::mutex mu;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  parallel_for(n, grain, [&](int64_t begin, int64_t end) {
    std::lock_guard<std::mutex> lock(mu);
    ranges.emplace_back(begin, end);
  });
  std::sort(ranges.begin(), ranges.end());
  return ranges;
}

TEST(ParallelFor, CoversEveryIndexOnceInRangesOfTheGrain) {
  ASSERT_GE(cpu_threads(), 1);
  for (int64_t n : {0, 1, 2, 3, 7, 64, 1000, 100003})
    for (int64_t grain : {-3, 0, 1, 2, 5, 64, 1 << 20}) {
      SCOPED_TRACE("n " + std::to_string(n) + " grain " + std::to_string(grain));
      const auto ranges = ranges_of(n, grain);
      int64_t next = 0;
      for (auto [begin, end] : ranges) {
        EXPECT_EQ(begin, next) << "ranges must tile [0, n) without gaps or overlaps";
        EXPECT_LT(begin, end) << "no empty ranges";
        next = end;
      }
      EXPECT_EQ(next, n);
      EXPECT_LE(static_cast<int64_t>(ranges.size()), cpu_threads());
      if (grain > 1 && ranges.size() > 1) {
        for (size_t i = 0; i + 1 < ranges.size(); ++i)
          EXPECT_GE(ranges[i].second - ranges[i].first, grain) << "range " << i;
      }
    }
}

TEST(ParallelFor, SharesLargeWorkWhenThereAreThreads) {
  if (cpu_threads() < 2)
    GTEST_SKIP() << "one CPU thread (OPENBLAS_NUM_THREADS=1 or a single core): nothing to share";
  std::mutex mu;
  std::set<std::thread::id> ids;
  parallel_for(1000, 1, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> lock(mu);
    ids.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(ids.size(), static_cast<size_t>(std::min(cpu_threads(), 1000)));
  EXPECT_EQ(ids.count(std::this_thread::get_id()), 1u) << "the caller takes a range itself";
}

TEST(ParallelFor, AnExceptionReachesTheCallerAndThePoolKeepsWorking) {
  for (int64_t failing : {int64_t{0}, int64_t{999}}) {  // the caller's range; the last one's
    EXPECT_THROW(parallel_for(1000, 1,
                              [&](int64_t begin, int64_t end) {
                                if (begin <= failing && failing < end)
                                  throw std::runtime_error("range failed");
                              }),
                 std::runtime_error);
  }
  std::atomic<int64_t> sum{0};
  parallel_for(1000, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) sum += i;
  });
  EXPECT_EQ(sum.load(), 999 * 1000 / 2);
}

TEST(ParallelFor, NestedCallsRunSeriallyInsideTheirRange) {
  std::atomic<int64_t> total{0};
  parallel_for(8, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const std::thread::id outer = std::this_thread::get_id();
      parallel_for(100, 1, [&](int64_t b, int64_t e) {
        EXPECT_EQ(std::this_thread::get_id(), outer) << "a nested call stays on its thread";
        EXPECT_EQ(b, 0);
        EXPECT_EQ(e, 100) << "one range: the whole nested loop";
        total += e - b;
      });
    }
  });
  EXPECT_EQ(total.load(), 800);
}

TEST(ParallelFor, CallsFromSeveralThreadsAtOnceAllComplete) {
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep)
        parallel_for(64, 1, [&](int64_t begin, int64_t end) { total += end - begin; });
    });
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(total.load(), 4 * 50 * 64);
}

}  // namespace
}  // namespace tdrop
