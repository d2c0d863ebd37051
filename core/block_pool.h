// The bookkeeping shared by tdrop's caching allocators (device memory in core/device.cpp, large
// host blocks in core/host_cache.cpp): blocks free by size and blocks handed out with their
// size. Not thread-safe; each allocator holds its own lock around it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>

namespace tdrop {

class BlockPool {
 public:
  // A free block of `bytes` to 2 * `bytes` (the smallest such), now in use; nullptr when none.
  // A larger block would hold memory the request does not use.
  void* take(size_t bytes) {
    auto it = free_.lower_bound(bytes);
    if (it == free_.end() || it->first > 2 * bytes) return nullptr;
    void* p = it->second;
    bytes_cached_ -= static_cast<int64_t>(it->first);
    bytes_in_use_ += static_cast<int64_t>(it->first);
    in_use_[p] = it->first;
    free_.erase(it);
    return p;
  }
  // A new block of `bytes`, in use.
  void add(void* p, size_t bytes) {
    in_use_[p] = bytes;
    bytes_in_use_ += static_cast<int64_t>(bytes);
  }
  // The size of in-use block p, which is no longer in use (the caller frees it or calls keep);
  // 0 when p is not in use here.
  size_t remove(void* p) {
    auto it = in_use_.find(p);
    if (it == in_use_.end()) return 0;
    const size_t bytes = it->second;
    in_use_.erase(it);
    bytes_in_use_ -= static_cast<int64_t>(bytes);
    return bytes;
  }
  // Block p of `bytes`, just removed, is free for take.
  void keep(void* p, size_t bytes) {
    free_.emplace(bytes, p);
    bytes_cached_ += static_cast<int64_t>(bytes);
  }
  // Calls release(p) on every free block and forgets them.
  template <class Release>
  void drain(Release release) {
    for (auto& [bytes, p] : free_) release(p);
    free_.clear();
    bytes_cached_ = 0;
  }
  int64_t bytes_in_use() const { return bytes_in_use_; }
  int64_t bytes_cached() const { return bytes_cached_; }

 private:
  std::multimap<size_t, void*> free_;  // by size
  std::map<void*, size_t> in_use_;
  int64_t bytes_in_use_ = 0, bytes_cached_ = 0;
};

}  // namespace tdrop
