#include "core/host_cache.h"

#include <unistd.h>

#include <cstdlib>
#include <mutex>

#include "core/block_pool.h"
#include "core/error.h"

namespace tdrop {

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCaching = false;
#else
constexpr bool kCaching = true;
#endif

void* aligned_block(size_t bytes, const char* what) {
  // Where the kernel overcommits memory, malloc grants any size and the process dies later, on
  // first touch; a request beyond the machine's RAM is refused here with a clear error instead.
  static const uint64_t ram = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) *
                              static_cast<uint64_t>(sysconf(_SC_PAGE_SIZE));
  TDROP_CHECK(bytes <= ram, "out of host memory in ", what, ": asked for ", bytes,
              " bytes, more than the machine's ", ram, " bytes of RAM");
  void* p = std::aligned_alloc(64, bytes);
  TDROP_CHECK(p != nullptr, "out of host memory in ", what, ": asked for ", bytes, " bytes");
  return p;
}

class HostCache {
 public:
  void* alloc(size_t bytes, const char* what) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (void* p = pool_.take(bytes)) {
        ++reused_blocks_;
        return p;
      }
    }
    void* p = aligned_block(bytes, what);  // outside the lock: malloc has its own
    std::lock_guard<std::mutex> lock(mu_);
    ++new_blocks_;
    pool_.add(p, bytes);
    return p;
  }
  // False when p is not one of this cache's blocks.
  bool release(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    const size_t bytes = pool_.remove(p);
    if (bytes == 0) return false;
    if (static_cast<size_t>(pool_.bytes_cached()) + bytes > kHostCacheMaxBytes) std::free(p);
    else pool_.keep(p, bytes);
    return true;
  }
  void trim() {
    std::lock_guard<std::mutex> lock(mu_);
    pool_.drain([](void* p) { std::free(p); });
  }
  HostCacheStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {new_blocks_, reused_blocks_, pool_.bytes_in_use(), pool_.bytes_cached()};
  }

 private:
  std::mutex mu_;
  BlockPool pool_;
  int64_t new_blocks_ = 0, reused_blocks_ = 0;
};

HostCache& cache() {
  static HostCache* c = new HostCache();  // never destroyed: tensors may be freed at exit
  return *c;
}

size_t block_size(size_t bytes) { return bytes == 0 ? 64 : (bytes + 63) / 64 * 64; }
bool cached(size_t block) { return kCaching && block >= kHostCacheMinBytes; }

}  // namespace

void* host_alloc(size_t bytes, const char* what) {
  const size_t block = block_size(bytes);
  return cached(block) ? cache().alloc(block, what) : aligned_block(block, what);
}

void host_free(void* p, size_t bytes) {
  if (p == nullptr) return;
  // A block from the cache is at least as large as the request it served.
  if (!cached(block_size(bytes)) || !cache().release(p)) std::free(p);
}

HostCacheStats host_cache_stats() { return cache().stats(); }
bool host_cache_enabled() { return kCaching; }
void host_empty_cache() { cache().trim(); }

}  // namespace tdrop
