// A cache of large host blocks. A tensor of a few MiB comes from mmap, or from a heap that glibc
// trims as soon as it shrinks, so every batch's activations arrive as fresh pages that the
// kernel faults in and zeroes one by one at first touch. Freed blocks of at least
// kHostCacheMinBytes are kept and handed out again, as the CUDA allocator does with device
// memory: ResNet-32's evaluation of the 10,000 Fashion-MNIST test images on 2 cores took 2.9
// million page faults and 19.1-19.9 s without it, 0.17 million and 13.7-14.2 s with it
// (bench/results/2026-11-28-cpu/host-cache.txt). Under AddressSanitizer nothing is cached, so
// that a use after free is still caught.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tdrop {

// Blocks smaller than this go straight to malloc and free: malloc reuses them without faults.
constexpr size_t kHostCacheMinBytes = size_t{1} << 20;
// At most this many bytes wait in the cache; a block freed beyond it is returned to the system.
constexpr size_t kHostCacheMaxBytes = size_t{1} << 30;

// 64-byte aligned memory of at least `bytes`: a cached block of up to twice the size when one
// is free, else a new one (errors name `what`). host_free takes back what host_alloc gave for
// the same `bytes`.
void* host_alloc(size_t bytes, const char* what);
void host_free(void* p, size_t bytes);

struct HostCacheStats {
  int64_t new_blocks = 0;     // large blocks taken from malloc so far
  int64_t reused_blocks = 0;  // large blocks handed out again from the cache so far
  int64_t bytes_in_use = 0;   // large blocks handed out and not yet freed
  int64_t bytes_cached = 0;   // large blocks free in the cache
};
HostCacheStats host_cache_stats();
// False under AddressSanitizer, where every block goes straight back to free.
bool host_cache_enabled();
// Returns every cached block to the system.
void host_empty_cache();

}  // namespace tdrop
