// A fixed pool of cpu_threads() - 1 workers woken per parallel_for. Ranges are assigned
// statically (range i to thread i): the work items are alike, and a static split keeps each
// call to one wake-up and one wait.
#include "core/parallel.h"

#include <cblas.h>  // OpenBLAS's, for openblas_get_num_threads()

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace tdrop {

namespace {

thread_local bool t_inside = false;  // inside a parallel_for range: nested calls run serially

class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this, i] { work(i + 1); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  // Runs f over `ranges` ranges of [0, n), `per` indices each; range 0 on the caller.
  void run(int ranges, int64_t n, int64_t per, const std::function<void(int64_t, int64_t)>& f) {
    std::unique_lock<std::mutex> call(call_mu_);  // one parallel_for at a time uses the pool
    {
      std::lock_guard<std::mutex> lock(mu_);
      f_ = &f, n_ = n, per_ = per, ranges_ = ranges, pending_ = ranges - 1, error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    std::exception_ptr mine;
    run_range(0, &mine);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return pending_ == 0; });
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run_range(int i, std::exception_ptr* error) {
    const int64_t begin = std::min(n_, i * per_), end = std::min(n_, begin + per_);
    if (begin >= end) return;
    t_inside = true;
    try {
      (*f_)(begin, end);
    } catch (...) {
      *error = std::current_exception();
    }
    t_inside = false;
  }

  void work(int index) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (index >= ranges_) continue;  // this call needs fewer threads
      lock.unlock();
      std::exception_ptr error;
      run_range(index, &error);
      lock.lock();
      if (error && !error_) error_ = error;
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex call_mu_, mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t, int64_t)>* f_ = nullptr;
  int64_t n_ = 0, per_ = 0;
  int ranges_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

Pool& pool() {
  static Pool p(cpu_threads() - 1);
  return p;
}

}  // namespace

int cpu_threads() {
  static const int n = std::max(1, openblas_get_num_threads());
  return n;
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& f) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t most = std::min<int64_t>(cpu_threads(), n / grain);  // ranges of >= grain
  if (most <= 1 || t_inside) return f(0, n);
  const int ranges = static_cast<int>(most);
  pool().run(ranges, n, (n + ranges - 1) / ranges, f);
}

}  // namespace tdrop
