// A host emulation of CUDA's execution model, enough to run the fused targeted-dropout kernels
// (kernels/targeted_dropout_fused_plan.cuh and the headers it includes) on a CPU and compare
// them with the reference bit for bit where there is no GPU. Include it before any kernel
// header, in a file compiled by the host compiler: it defines what nvcc would (__device__,
// threadIdx, uint4, __shfl_sync, ...).
//
// Each thread of a block is a fiber (Boost.Context) on the calling OS thread, and the blocks of
// a launch run one after another. A thread runs until it reaches a barrier or a warp collective
// (shuffle, ballot, reduce), where it waits for the others; which ready thread runs next is
// drawn at random, mostly from the warp that ran last, so that a warp can get far ahead of
// another as on a GPU, and shared-memory accesses that a barrier should order but does not come
// out in varying orders. CUDA's rules are enforced, each violation an error naming the
// kernel's thread: every lane named in a collective's mask must reach the same collective with
// the same mask, a named barrier counts whole warps, and a launch that can make no progress
// (a barrier some thread never reaches) is reported, not hung.
//
// Shared memory holds garbage (0xA5 bytes) when a block starts, so a kernel that reads what it
// did not write gets wrong values, not zeros. What it does not model:
// - threads switch only at barriers and collectives, so a race between two of them (a plain
//   read-modify-write where an atomic belongs) shows only if a drawn order changes a result;
//   blocks run one after another, so blocks never race; a spin-wait on memory hangs;
// - a collective orders shared memory here, where CUDA's imply no fence (__syncwarp does);
// - one collective at a time per warp: two halves of a warp in collectives of disjoint masks,
//   legal since sm_70, are reported as divergent;
// - misaligned 16-byte accesses run here (the sanitizer build's UBSan reports them; an
//   asynchronous copy checks its own);
// - anything about speed.
#pragma once

// Every standard header the kernels use comes before the macros below.
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <source_location>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#define TDROP_CUDA_EMULATED 1

namespace cuda_emu {

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

// The calling fiber's indices (valid only inside a launch).
const dim3& thread_idx();
const dim3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();

// The kinds of warp collective; a warp's lanes must all reach the same one.
enum class Collective { Shfl, ShflUp, ShflXor, Ballot, ReduceAdd, ReduceAnd, ReduceOr };
// Waits for the lanes of `mask` to reach the collective, each with its value and argument
// (source lane, delta or lane mask); returns this lane's result.
uint32_t warp_collective(Collective kind, uint32_t mask, uint32_t value, int arg,
                         const std::source_location& at);
void sync_threads();
void named_barrier(int id, int count);
void* dynamic_shared_memory();
// Asynchronous copies from global to shared memory (cp.async): `copy_async` starts one of
// `bytes` (4, 8 or 16, both addresses aligned to it, `dst` in shared memory) and fills its
// destination with garbage at once; `copy_async_commit` closes the calling thread's group of
// copies started since the last; `copy_async_wait(pending)` completes its oldest groups until
// at most `pending` remain. So a copy lands at the latest moment CUDA allows, and whoever reads
// its destination too early reads neither the old bytes nor the new. A thread that exits with
// a copy in flight breaks a rule.
void copy_async(void* dst, const void* src, size_t bytes);
void copy_async_commit();
void copy_async_wait(int pending);

// Runs `kernel` on grid.x blocks of block.x threads with `shared_bytes` of dynamic shared memory
// (1-D launches only). `schedule_seed` draws the order threads resume in. Throws
// std::runtime_error on a broken CUDA rule, naming the block and thread.
void launch(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& kernel,
            uint64_t schedule_seed = 1);

}  // namespace cuda_emu

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __grid_constant__
// Every __shared__ variable is a static in one linker section, which the emulator fills with
// garbage before each block, as a block's shared memory holds garbage when it starts.
#define __shared__ [[gnu::section("cuda_emu_shared")]] static
#define __align__(n) alignas(n)

#define threadIdx (::cuda_emu::thread_idx())
#define blockIdx (::cuda_emu::block_idx())
#define blockDim (::cuda_emu::block_dim())
#define gridDim (::cuda_emu::grid_dim())

struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

inline void __syncthreads() { cuda_emu::sync_threads(); }

// The collectives take 32-bit integers (all the kernels exchange): another type is a compile
// error here, where CUDA would move its bits. Each call passes its place in the source, which
// stands for the instruction: the lanes of a mask must meet at the same one.
namespace cuda_emu {
template <class T>
T word_collective(Collective kind, unsigned mask, T v, int arg, const std::source_location& at) {
  static_assert(std::is_integral_v<T> && sizeof(T) == 4,
                "the emulated collectives take 32-bit integers");
  return static_cast<T>(warp_collective(kind, mask, static_cast<uint32_t>(v), arg, at));
}
}  // namespace cuda_emu
template <class T>
T __shfl_sync(unsigned mask, T v, int src,
              std::source_location at = std::source_location::current()) {
  return cuda_emu::word_collective(cuda_emu::Collective::Shfl, mask, v, src, at);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta,
                 std::source_location at = std::source_location::current()) {
  return cuda_emu::word_collective(cuda_emu::Collective::ShflUp, mask, v,
                                   static_cast<int>(delta), at);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask,
                  std::source_location at = std::source_location::current()) {
  return cuda_emu::word_collective(cuda_emu::Collective::ShflXor, mask, v, lane_mask, at);
}
inline unsigned __ballot_sync(unsigned mask, int pred,
                              std::source_location at = std::source_location::current()) {
  return cuda_emu::warp_collective(cuda_emu::Collective::Ballot, mask, pred != 0, 0, at);
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned v,
                                  std::source_location at = std::source_location::current()) {
  return cuda_emu::warp_collective(cuda_emu::Collective::ReduceAdd, mask, v, 0, at);
}
inline unsigned __reduce_and_sync(unsigned mask, unsigned v,
                                  std::source_location at = std::source_location::current()) {
  return cuda_emu::warp_collective(cuda_emu::Collective::ReduceAnd, mask, v, 0, at);
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned v,
                                 std::source_location at = std::source_location::current()) {
  return cuda_emu::warp_collective(cuda_emu::Collective::ReduceOr, mask, v, 0, at);
}

// One OS thread runs every fiber, so a read-modify-write is atomic as it stands.
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p = old + v;
  return old;
}
inline int atomicAdd(int* p, int v) {
  const int old = *p;
  *p = old + v;
  return old;
}
inline int atomicExch(int* p, int v) {
  const int old = *p;
  *p = v;
  return old;
}

inline unsigned __float_as_uint(float f) { return std::bit_cast<unsigned>(f); }
inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
// Round to nearest, as the CPU reference does (x86-64's baseline has no FMA to contract into).
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }

inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
