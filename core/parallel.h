// CPU work split over threads: the row-wise work OpenBLAS does not do (unfolding images and
// copying rows for convolutions, targeted-dropout selection and mask gradients, softmax and
// layer norm) would otherwise leave every core but one idle between matrix products.
#pragma once
#include <cstdint>
#include <functional>

namespace tdrop {

// Threads for CPU work: OpenBLAS's count (OPENBLAS_NUM_THREADS, else the usable cores), so one
// setting bounds both and a run's header can name it.
int cpu_threads();

// Calls f(begin, end) on disjoint ranges that cover [0, n), at most cpu_threads() at a time,
// each at least `grain` indices long (the last may be shorter), and returns when all are done.
// The calling thread takes the first range. Results are the same for any thread count when
// each index's work is independent of the others. An exception thrown by f is rethrown here
// (the first, when several ranges throw). A call from inside f runs serially.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& f);

// The grain for items of `item_elements` elements each, so that a range holds at least
// `min_elements`: waking a thread costs tens of microseconds (more on a virtual machine), so a
// range should be well beyond that. 64K elements is about 20-500 microseconds of the row-wise
// CPU ops (copies at the fast end, targeted-dropout selection at the slow end).
inline int64_t grain_for(int64_t item_elements, int64_t min_elements = int64_t{1} << 16) {
  return item_elements <= 0 ? min_elements : (min_elements + item_elements - 1) / item_elements;
}

}  // namespace tdrop
