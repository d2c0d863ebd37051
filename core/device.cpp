#include "core/device.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "core/cuda_check.h"

namespace tdrop {

namespace {
// What a request for the GPU meets on a machine without one (the CLI and the allocator).
constexpr const char* kNoGpu = "no usable CUDA GPU was found (no driver or no device)";
}  // namespace

bool cuda_available() {
  static const bool available = [] {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear the sticky "no driver" error
      return false;
    }
    return n > 0;
  }();
  return available;
}

std::string cuda_device_name() {
  if (!cuda_available()) return "";
  cudaDeviceProp p{};
  TDROP_CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
  return p.name;
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::CPU;
  if (s == "auto") return cuda_available() ? Device::CUDA : Device::CPU;
  if (s == "cuda") {
    TDROP_CHECK(cuda_available(), "--device cuda: ", kNoGpu,
                "; use --device cpu or --device auto");
    return Device::CUDA;
  }
  fail("unknown device '", s, "': expected cpu, cuda or auto");
}

cudaStream_t cuda_stream() {
  static cudaStream_t stream = [] {
    TDROP_CHECK(cuda_available(), "a CUDA operation was requested but no GPU is available");
    cudaStream_t s;
    TDROP_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }();
  return stream;
}

cublasHandle_t cublas_handle() {
  static cublasHandle_t handle = [] {
    cublasHandle_t h;
    TDROP_CUBLAS_CHECK(cublasCreate(&h));
    TDROP_CUBLAS_CHECK(cublasSetStream(h, cuda_stream()));
    // Keep fp32 GEMMs in true fp32 so CPU and CUDA results stay comparable.
    TDROP_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    return h;
  }();
  return handle;
}

namespace {

std::atomic<int64_t> g_stream_syncs{0};

void stream_sync() {
  ++g_stream_syncs;
  TDROP_CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));
}

// A caching allocator for one stream: freed blocks are kept by size and handed out again.
// Because every kernel runs on cuda_stream(), a block freed by the host can be reused at once:
// any later use is queued after the earlier one.
class CudaCache {
 public:
  void* alloc(size_t bytes, const char* what) {
    bytes = round(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.lower_bound(bytes);
    if (it != free_.end() && it->first <= 2 * bytes) {
      void* p = it->second;
      stats_.bytes_cached -= static_cast<int64_t>(it->first);
      stats_.bytes_in_use += static_cast<int64_t>(it->first);
      sizes_[p] = it->first;
      free_.erase(it);
      return p;
    }
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      trim_locked();
      e = cudaMalloc(&p, bytes);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      // Without a GPU, cudaMalloc's failure is no shortage of memory.
      TDROP_CHECK(cuda_available(), what, ": ", kNoGpu, "; cannot allocate ", bytes,
                  " bytes of CUDA memory");
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail("CUDA out of memory in ", what, ": asked for ", bytes, " bytes (", bytes >> 20,
           " MiB); ", free_b >> 20, " MiB free of ", total_b >> 20, " MiB; tdrop holds ",
           stats_.bytes_in_use >> 20, " MiB in use");
    }
    ++stats_.malloc_calls;
    stats_.bytes_in_use += static_cast<int64_t>(bytes);
    sizes_[p] = bytes;
    return p;
  }
  void release(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sizes_.find(p);
    if (it == sizes_.end()) return;
    stats_.bytes_in_use -= static_cast<int64_t>(it->second);
    stats_.bytes_cached += static_cast<int64_t>(it->second);
    free_.emplace(it->second, p);
    sizes_.erase(it);
  }
  void trim() {
    std::lock_guard<std::mutex> lock(mu_);
    trim_locked();
  }
  CudaAllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  static size_t round(size_t b) { return b < 512 ? 512 : (b + 511) / 512 * 512; }
  void trim_locked() {
    ++g_stream_syncs;
    cudaStreamSynchronize(cuda_stream());
    for (auto& [size, p] : free_) {
      cudaFree(p);
      ++stats_.free_calls;
      stats_.bytes_cached -= static_cast<int64_t>(size);
    }
    free_.clear();
  }
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  std::map<void*, size_t> sizes_;
  CudaAllocatorStats stats_;
};

CudaCache& cache() {
  static CudaCache* c = new CudaCache();  // never destroyed: blocks may be freed at exit
  return *c;
}

}  // namespace

void* device_alloc(Device d, size_t bytes, const char* what) {
  if (d == Device::CUDA) return cache().alloc(bytes, what);
  if (bytes == 0) bytes = 64;
  // Where the kernel overcommits memory, malloc grants any size and the process dies later, on
  // first touch; a request beyond the machine's RAM is refused here with a clear error instead.
  static const uint64_t ram = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) *
                              static_cast<uint64_t>(sysconf(_SC_PAGE_SIZE));
  TDROP_CHECK(bytes <= ram, "out of host memory in ", what, ": asked for ", bytes,
              " bytes, more than the machine's ", ram, " bytes of RAM");
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  TDROP_CHECK(p != nullptr, "out of host memory in ", what, ": asked for ", bytes, " bytes");
  return p;
}

void device_free(Device d, void* p, size_t) {
  if (!p) return;
  if (d == Device::CUDA) cache().release(p);
  else std::free(p);
}

void device_copy(void* dst, Device dd, const void* src, Device sd, size_t bytes) {
  if (bytes == 0) return;
  if (dd == Device::CPU && sd == Device::CPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
  cudaMemcpyKind kind = dd == Device::CUDA
                            ? (sd == Device::CUDA ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                            : cudaMemcpyDeviceToHost;
  TDROP_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, cuda_stream()));
  // The host buffer may be pageable and is the caller's to reuse on return (training uploads
  // through Uploader instead, which does not wait).
  if (dd == Device::CPU || sd == Device::CPU) stream_sync();
}

void device_memset_zero(Device d, void* p, size_t bytes) {
  if (bytes == 0) return;
  if (d == Device::CPU) std::memset(p, 0, bytes);
  else TDROP_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, cuda_stream()));
}

void device_synchronize() {
  if (cuda_available()) stream_sync();
}

int64_t host_stream_syncs() { return g_stream_syncs.load(); }

CudaAllocatorStats cuda_allocator_stats() { return cache().stats(); }
void cuda_empty_cache() {
  if (cuda_available()) cache().trim();
}

}  // namespace tdrop
