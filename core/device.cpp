#include "core/device.h"

#include <atomic>
#include <cstring>
#include <mutex>

#include "core/block_pool.h"
#include "core/cuda_check.h"
#include "core/host_cache.h"

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
    if (void* p = pool_.take(bytes)) return p;
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
           pool_.bytes_in_use() >> 20, " MiB in use");
    }
    ++malloc_calls_;
    pool_.add(p, bytes);
    return p;
  }
  void release(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    if (const size_t bytes = pool_.remove(p)) pool_.keep(p, bytes);
  }
  void trim() {
    std::lock_guard<std::mutex> lock(mu_);
    trim_locked();
  }
  CudaAllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {malloc_calls_, free_calls_, pool_.bytes_in_use(), pool_.bytes_cached()};
  }

 private:
  static size_t round(size_t b) { return b < 512 ? 512 : (b + 511) / 512 * 512; }
  void trim_locked() {
    ++g_stream_syncs;
    cudaStreamSynchronize(cuda_stream());
    pool_.drain([this](void* p) {
      cudaFree(p);
      ++free_calls_;
    });
  }
  std::mutex mu_;
  BlockPool pool_;
  int64_t malloc_calls_ = 0, free_calls_ = 0;
};

CudaCache& cache() {
  static CudaCache* c = new CudaCache();  // never destroyed: blocks may be freed at exit
  return *c;
}

}  // namespace

void* device_alloc(Device d, size_t bytes, const char* what) {
  return d == Device::CUDA ? cache().alloc(bytes, what) : host_alloc(bytes, what);
}

void device_free(Device d, void* p, size_t bytes) {
  if (!p) return;
  if (d == Device::CUDA) cache().release(p);
  else host_free(p, bytes);
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
