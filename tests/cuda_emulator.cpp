// The host emulation of CUDA's execution model (see cuda_emulator.h): a block's threads are
// fibers (Boost.Context) on one OS thread, switched at barriers and warp collectives.
#include <boost/context/fiber.hpp>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#include "tests/cuda_emulator.h"

namespace cuda_emu {
namespace {

// A fiber's stack: the kernels' frames are small, but a sanitizer build's are several times
// larger. Untouched pages of it are never committed.
constexpr size_t kStackBytes = 512 * 1024;
constexpr int kWarpSize = 32;

namespace ctx = boost::context;

// Boost.Context's stack allocator for a thread's own stack, reused block after block.
struct OwnStack {
  char* base;
  ctx::stack_context allocate() {
    ctx::stack_context s;
    s.size = kStackBytes;
    s.sp = base + kStackBytes;
    return s;
  }
  void deallocate(ctx::stack_context&) noexcept {}
};

// An asynchronous copy in flight (copy_async).
struct AsyncCopy {
  void* dst;
  const void* src;
  size_t bytes;
};

struct Thread {
  std::unique_ptr<char[]> stack;  // first, so destroyed last: the fibers' records live on it
  ctx::fiber fiber;               // the thread, while the scheduler holds it
  ctx::fiber back;                // the scheduler, while the thread runs
  dim3 idx;
  bool done = false;  // returned from the kernel (whether it may run: Launch::ready)
  uint32_t result = 0;  // of the collective it waits in
  void* asan_fake_stack = nullptr;
  std::vector<AsyncCopy> open_copies;                // started since the last commit
  std::vector<std::vector<AsyncCopy>> copy_groups;  // committed, oldest first
};

// A warp collective in progress: the lanes of `mask` arrive one by one.
struct WarpCollective {
  bool open = false;
  Collective kind = Collective::Shfl;
  uint32_t mask = 0, arrived = 0;
  const char* file = "";  // where in the source the first lane called it
  unsigned line = 0;
  uint32_t value[kWarpSize] = {};
  int arg[kWarpSize] = {};
};

struct Barrier {
  int expected = 0;  // 0: none in progress
  std::vector<int> arrived;
};

struct Launch {
  dim3 grid, block, block_idx;
  const std::function<void()>* kernel = nullptr;
  std::vector<Thread> threads;
  std::vector<WarpCollective> warps;
  Barrier barriers[16];
  std::vector<uint4> shared;  // dynamic shared memory, 16-byte aligned
  size_t shared_bytes = 0;
  int current = -1;
  std::vector<std::vector<int>> ready;  // per warp, the threads that may run, in no order
  const void* scheduler_stack = nullptr;
  size_t scheduler_stack_size = 0;
  std::string error;  // the first broken rule; the launch stops there
  bool aborting = false;  // the launch failed: resumed threads unwind (Abandon) and exit
};

// Thrown in a thread resumed after its launch failed, so that it leaves the kernel through its
// own frames, as it would any exception, rather than being torn down by Boost.Context.
struct Abandon {};

// The linker's bounds of the section that holds every __shared__ variable (weak: a program
// may have none).
extern "C" {
[[gnu::weak]] extern char __start_cuda_emu_shared[];
[[gnu::weak]] extern char __stop_cuda_emu_shared[];
}

// What a kernel reads of shared memory it did not write is garbage, not zeros.
constexpr unsigned char kGarbage = 0xA5;

void fill_shared_with_garbage(Launch& L) {
  if (!L.shared.empty()) std::memset(L.shared.data(), kGarbage, L.shared.size() * sizeof(uint4));
  char* p = __start_cuda_emu_shared;
  char* const end = __stop_cuda_emu_shared;
  if (p == nullptr || end == nullptr) return;
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer fences each global with poisoned bytes, which must stay untouched.
  for (; p < end; ++p)
    if (!__asan_address_is_poisoned(p)) *p = static_cast<char>(kGarbage);
#else
  std::memset(p, kGarbage, static_cast<size_t>(end - p));
#endif
}

Launch* g_launch = nullptr;  // the launch in progress: one at a time, on one OS thread

// AddressSanitizer must be told which stack is live across a context switch.
void start_switch(void** fake_stack, const void* bottom, size_t size) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(fake_stack, bottom, size);
#else
  (void)fake_stack, (void)bottom, (void)size;
#endif
}
void finish_switch(void* fake_stack, const void** old_bottom, size_t* old_size) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(fake_stack, old_bottom, old_size);
#else
  (void)fake_stack, (void)old_bottom, (void)old_size;
#endif
}

Launch& launch_in_progress() {
  if (g_launch == nullptr || g_launch->current < 0)
    throw std::logic_error("cuda_emu: a device function was called outside a launch");
  return *g_launch;
}

std::string where(const Launch& L, int thread) {
  std::ostringstream s;
  s << "block " << L.block_idx.x << ", thread " << thread << " (warp " << thread / kWarpSize
    << ", lane " << thread % kWarpSize << ")";
  return s.str();
}

void make_ready(Launch& L, int thread) {
  L.ready[static_cast<size_t>(thread / kWarpSize)].push_back(thread);
}

// Back to the scheduler; returns when this thread is resumed (never, if `exiting`).
void yield(bool exiting = false) {
  Launch& L = *g_launch;
  Thread& t = L.threads[L.current];
  start_switch(exiting ? nullptr : &t.asan_fake_stack, L.scheduler_stack, L.scheduler_stack_size);
  if (exiting) return;  // thread_main returns the scheduler's fiber
  t.back = std::move(t.back).resume();
  finish_switch(t.asan_fake_stack, nullptr, nullptr);
  if (L.aborting) throw Abandon{};
}

// Records a broken rule and parks the thread for good: the scheduler throws it.
[[noreturn]] void fail(const std::string& message) {
  Launch& L = *g_launch;
  if (L.error.empty()) L.error = message;
  yield();
  throw std::logic_error("cuda_emu: a failed thread was resumed");
}

ctx::fiber thread_main(ctx::fiber&& scheduler) {
  Launch& L = *g_launch;
  finish_switch(nullptr, &L.scheduler_stack, &L.scheduler_stack_size);
  Thread& t = L.threads[static_cast<size_t>(L.current)];
  t.back = std::move(scheduler);
  try {
    if (!L.aborting) (*L.kernel)();
  } catch (const Abandon&) {
  } catch (const std::exception& e) {
    if (L.error.empty()) L.error = where(L, L.current) + " threw: " + e.what();
  }
  size_t in_flight = t.open_copies.size();
  for (const std::vector<AsyncCopy>& group : t.copy_groups) in_flight += group.size();
  if (in_flight > 0 && L.error.empty())
    L.error = where(L, L.current) + " exited with " + std::to_string(in_flight) +
              " asynchronous copies in flight";
  t.done = true;
  yield(/*exiting=*/true);
  return std::move(t.back);
}

const char* collective_name(Collective kind) {
  switch (kind) {
    case Collective::Shfl: return "__shfl_sync";
    case Collective::ShflUp: return "__shfl_up_sync";
    case Collective::ShflXor: return "__shfl_xor_sync";
    case Collective::Ballot: return "__ballot_sync";
    case Collective::ReduceAdd: return "__reduce_add_sync";
    case Collective::ReduceAnd: return "__reduce_and_sync";
    case Collective::ReduceOr: return "__reduce_or_sync";
  }
  return "?";
}

// Every lane's result once the whole mask has arrived.
void complete(Launch& L, int warp, WarpCollective& c) {
  uint32_t results[kWarpSize] = {};
  uint32_t ballot = 0, sum = 0, all = 0xffffffffu, any = 0;
  for (int l = 0; l < kWarpSize; ++l) {
    if (((c.mask >> l) & 1u) == 0) continue;
    ballot |= (c.value[l] != 0 ? 1u : 0u) << l;
    sum += c.value[l];
    all &= c.value[l];
    any |= c.value[l];
  }
  for (int l = 0; l < kWarpSize; ++l) {
    if (((c.mask >> l) & 1u) == 0) continue;
    int src = l;
    switch (c.kind) {
      case Collective::Shfl: src = c.arg[l] & (kWarpSize - 1); break;
      case Collective::ShflUp: {  // PTX takes the delta's low 5 bits
        const int delta = c.arg[l] & (kWarpSize - 1);
        src = l - delta >= 0 ? l - delta : l;
        break;
      }
      case Collective::ShflXor: src = (l ^ c.arg[l]) & (kWarpSize - 1); break;
      default: break;
    }
    if (((c.mask >> src) & 1u) == 0) {
      std::ostringstream s;
      s << where(L, warp * kWarpSize + l) << ": " << collective_name(c.kind) << " reads lane "
        << src << ", which its mask 0x" << std::hex << c.mask << " leaves out";
      fail(s.str());
    }
    switch (c.kind) {
      case Collective::Ballot: results[l] = ballot; break;
      case Collective::ReduceAdd: results[l] = sum; break;
      case Collective::ReduceAnd: results[l] = all; break;
      case Collective::ReduceOr: results[l] = any; break;
      default: results[l] = c.value[src]; break;
    }
  }
  for (int l = 0; l < kWarpSize; ++l) {
    if (((c.mask >> l) & 1u) == 0) continue;
    const int thread = warp * kWarpSize + l;
    L.threads[static_cast<size_t>(thread)].result = results[l];
    if (thread != L.current) make_ready(L, thread);  // the last to arrive goes on
  }
  c.open = false;
}

// Arrival at barrier `id` of `count` threads; the last one releases the others.
void arrive(int id, int count) {
  Launch& L = launch_in_progress();
  Barrier& b = L.barriers[id];
  if (b.expected == 0) b.expected = count;
  if (b.expected != count) {
    std::ostringstream s;
    s << where(L, L.current) << ": barrier " << id << " for " << count
      << " threads while it is in progress for " << b.expected;
    fail(s.str());
  }
  b.arrived.push_back(L.current);
  if (static_cast<int>(b.arrived.size()) < b.expected) {
    yield();
    return;
  }
  // bar.sync is executed by whole warps.
  std::vector<int> per_warp(L.warps.size(), 0);
  for (int t : b.arrived) ++per_warp[static_cast<size_t>(t / kWarpSize)];
  for (size_t w = 0; w < per_warp.size(); ++w)
    if (per_warp[w] != 0 && per_warp[w] != kWarpSize) {
      std::ostringstream s;
      s << "block " << L.block_idx.x << ": barrier " << id << " completed with " << per_warp[w]
        << " of warp " << w << "'s 32 threads (a barrier is reached by whole warps)";
      fail(s.str());
    }
  for (int t : b.arrived) make_ready(L, t);  // this one among them
  b.arrived.clear();
  b.expected = 0;
  yield();
}

std::string describe_waits(const Launch& L) {
  std::ostringstream s;
  int done = 0;
  for (const Thread& t : L.threads) done += t.done;
  s << "block " << L.block_idx.x << " can make no progress (" << done << " of "
    << L.threads.size() << " threads exited)";
  for (int id = 0; id < 16; ++id)
    if (L.barriers[id].expected > 0)
      s << "; barrier " << id << " holds " << L.barriers[id].arrived.size() << " of "
        << L.barriers[id].expected << " threads";
  for (size_t w = 0; w < L.warps.size(); ++w)
    if (L.warps[w].open)
      s << "; warp " << w << " waits in " << collective_name(L.warps[w].kind) << " (mask 0x"
        << std::hex << L.warps[w].mask << ", arrived 0x" << L.warps[w].arrived << std::dec << ")";
  return s.str();
}

void resume(Launch& L, int i) {
  L.current = i;
  Thread& t = L.threads[static_cast<size_t>(i)];
  void* fake_stack = nullptr;
  start_switch(&fake_stack, t.stack.get(), kStackBytes);
  t.fiber = std::move(t.fiber).resume();
  finish_switch(fake_stack, nullptr, nullptr);
  L.current = -1;
}

void run_block(Launch& L, std::mt19937_64& rng) {
  const int n = static_cast<int>(L.threads.size());
  for (int i = 0; i < n; ++i) {
    Thread& t = L.threads[static_cast<size_t>(i)];
    t.idx = dim3{static_cast<unsigned>(i), 0, 0};
    t.done = false;
    t.open_copies.clear();
    t.copy_groups.clear();
    t.fiber = ctx::fiber(std::allocator_arg, OwnStack{t.stack.get()}, thread_main);
  }
  for (WarpCollective& w : L.warps) w = WarpCollective{};
  for (Barrier& b : L.barriers) b = Barrier{};
  fill_shared_with_garbage(L);
  for (std::vector<int>& r : L.ready) r.clear();
  for (int i = 0; i < n; ++i) L.ready[static_cast<size_t>(i / kWarpSize)].push_back(i);
  // One thread at a time, drawn from the ready ones of one warp, which keeps running (its
  // collectives one after another) until it waits for other warps, or until a warp is drawn
  // again, one time in `redraw` (4 to 256, drawn per block): as on a GPU, a warp can get far
  // ahead of another, so that a write a barrier should have held back meets a late read.
  const uint64_t redraw = uint64_t{4} << (rng() % 7);
  std::vector<int> warps_ready;
  int warp = -1;
  for (;;) {
    if (warp < 0 || L.ready[static_cast<size_t>(warp)].empty() || rng() % redraw == 0) {
      warps_ready.clear();
      for (size_t w = 0; w < L.ready.size(); ++w)
        if (!L.ready[w].empty()) warps_ready.push_back(static_cast<int>(w));
      if (warps_ready.empty()) break;
      warp = warps_ready[static_cast<size_t>(rng() % warps_ready.size())];
    }
    std::vector<int>& r = L.ready[static_cast<size_t>(warp)];
    const size_t pick = static_cast<size_t>(rng() % r.size());
    const int i = r[pick];
    r[pick] = r.back();
    r.pop_back();
    resume(L, i);
    if (!L.error.empty()) throw std::runtime_error("cuda_emu: " + L.error);
  }
  for (const Thread& t : L.threads)
    if (!t.done) throw std::runtime_error("cuda_emu: " + describe_waits(L));
}

}  // namespace

const dim3& thread_idx() {
  const Launch& L = launch_in_progress();
  return L.threads[static_cast<size_t>(L.current)].idx;
}
const dim3& block_idx() { return launch_in_progress().block_idx; }
const dim3& block_dim() { return launch_in_progress().block; }
const dim3& grid_dim() { return launch_in_progress().grid; }

uint32_t warp_collective(Collective kind, uint32_t mask, uint32_t value, int arg,
                         const std::source_location& at) {
  Launch& L = launch_in_progress();
  const int warp = L.current / kWarpSize, lane = L.current % kWarpSize;
  WarpCollective& c = L.warps[static_cast<size_t>(warp)];
  if (((mask >> lane) & 1u) == 0) {
    std::ostringstream s;
    s << where(L, L.current) << ": " << collective_name(kind) << " with mask 0x" << std::hex
      << mask << ", which leaves out the calling lane";
    fail(s.str());
  }
  if (!c.open) {
    c.open = true;
    c.kind = kind;
    c.mask = mask;
    c.arrived = 0;
    c.file = at.file_name();
    c.line = at.line();
  } else if (c.kind != kind || c.mask != mask || c.line != at.line() ||
             std::strcmp(c.file, at.file_name()) != 0) {
    std::ostringstream s;
    s << where(L, L.current) << " reached " << collective_name(kind) << " (mask 0x" << std::hex
      << mask << ") at " << at.file_name() << ":" << std::dec << at.line()
      << " while its warp's lanes 0x" << std::hex << c.arrived << " wait in "
      << collective_name(c.kind) << " (mask 0x" << c.mask << ") at " << c.file << ":"
      << std::dec << c.line << ": divergent collectives";
    fail(s.str());
  }
  c.arrived |= 1u << lane;
  c.value[lane] = value;
  c.arg[lane] = arg;
  if (c.arrived != c.mask) {
    yield();
  } else {
    complete(L, warp, c);
  }
  return L.threads[static_cast<size_t>(L.current)].result;
}

void sync_threads() {
  Launch& L = launch_in_progress();
  arrive(0, static_cast<int>(L.block.x));
}

void named_barrier(int id, int count) {
  Launch& L = launch_in_progress();
  if (id <= 0 || id >= 16 || count <= 0 || count % kWarpSize != 0 ||
      count > static_cast<int>(L.block.x)) {
    std::ostringstream s;
    s << where(L, L.current) << ": named barrier " << id << " for " << count
      << " threads (ids 1 to 15, whole warps of the block's " << L.block.x << " threads)";
    fail(s.str());
  }
  arrive(id, count);
}

void* dynamic_shared_memory() {
  Launch& L = launch_in_progress();
  return L.shared_bytes == 0 ? nullptr : static_cast<void*>(L.shared.data());
}

void copy_async(void* dst, const void* src, size_t bytes) {
  Launch& L = launch_in_progress();
  const auto inside = [&](const char* begin, const char* end) {
    const char* d = static_cast<const char*>(dst);
    return begin != nullptr && begin <= d && d + bytes <= end;
  };
  const char* dynamic = reinterpret_cast<const char*>(L.shared.data());
  const bool aligned = (bytes == 4 || bytes == 8 || bytes == 16) &&
                       reinterpret_cast<uintptr_t>(dst) % bytes == 0 &&
                       reinterpret_cast<uintptr_t>(src) % bytes == 0;
  if (!aligned || !(inside(dynamic, dynamic + L.shared_bytes) ||
                    inside(__start_cuda_emu_shared, __stop_cuda_emu_shared))) {
    std::ostringstream s;
    s << where(L, L.current) << ": asynchronous copy of " << bytes << " bytes from " << src
      << " to " << dst << " (4, 8 or 16 bytes, aligned, into shared memory)";
    fail(s.str());
  }
  std::memset(dst, kGarbage, bytes);
  L.threads[static_cast<size_t>(L.current)].open_copies.push_back(AsyncCopy{dst, src, bytes});
}

void copy_async_commit() {
  Launch& L = launch_in_progress();
  Thread& t = L.threads[static_cast<size_t>(L.current)];
  t.copy_groups.push_back(std::move(t.open_copies));
  t.open_copies.clear();
}

void copy_async_wait(int pending) {
  Launch& L = launch_in_progress();
  Thread& t = L.threads[static_cast<size_t>(L.current)];
  while (static_cast<int>(t.copy_groups.size()) > std::max(pending, 0)) {
    for (const AsyncCopy& c : t.copy_groups.front()) std::memcpy(c.dst, c.src, c.bytes);
    t.copy_groups.erase(t.copy_groups.begin());
  }
}

void launch(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& kernel,
            uint64_t schedule_seed) {
  if (g_launch != nullptr) throw std::logic_error("cuda_emu: a launch inside a launch");
  if (grid.y != 1 || grid.z != 1 || block.y != 1 || block.z != 1 || grid.x == 0 ||
      block.x == 0 || block.x % kWarpSize != 0 || block.x > 1024)
    throw std::invalid_argument("cuda_emu: launches are 1-D, of whole warps, at most 1024 "
                                "threads a block");
  Launch L;
  L.grid = grid;
  L.block = block;
  L.kernel = &kernel;
  L.threads.resize(block.x);
  for (Thread& t : L.threads) t.stack.reset(new char[kStackBytes]);
  L.warps.resize(block.x / kWarpSize);
  L.ready.resize(block.x / kWarpSize);
  L.shared_bytes = shared_bytes;
  L.shared.resize((shared_bytes + sizeof(uint4) - 1) / sizeof(uint4));
  std::mt19937_64 rng(schedule_seed);
  g_launch = &L;
  try {
    for (unsigned b = 0; b < grid.x; ++b) {
      L.block_idx = dim3{b, 0, 0};
      run_block(L, rng);
    }
  } catch (...) {
    // The threads the failure left parked mid-kernel (or not yet started) are resumed to leave.
    L.aborting = true;
    for (size_t i = 0; i < L.threads.size(); ++i)
      if (L.threads[i].fiber) resume(L, static_cast<int>(i));
    g_launch = nullptr;
    throw;
  }
  g_launch = nullptr;
}

}  // namespace cuda_emu
