// Where a tensor lives. tdrop drives one GPU (device 0); CPU is always available.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace tdrop {

enum class Device : uint8_t { CPU, CUDA };

inline const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

// True when a CUDA device is usable (driver present, at least one GPU). Cached after the first call.
bool cuda_available();
// Human-readable name of GPU 0, e.g. "NVIDIA H100 80GB HBM3"; "" when none.
std::string cuda_device_name();
// "cpu", "cuda" or "auto" (CUDA when available); throws for anything else or for "cuda"
// without a GPU.
Device parse_device(const std::string& s);

// Raw memory. CPU memory is 64-byte aligned, its large blocks cached (core/host_cache.h); CUDA
// memory comes from a caching allocator so that steady-state training makes no
// cudaMalloc/cudaFree calls. `what` names the op for OOM errors. device_free takes the size
// that device_alloc was asked for.
void* device_alloc(Device d, size_t bytes, const char* what);
void device_free(Device d, void* p, size_t bytes);
// Copies between any two devices (synchronous with respect to the host for CUDA->CPU).
void device_copy(void* dst, Device dd, const void* src, Device sd, size_t bytes);
void device_memset_zero(Device d, void* p, size_t bytes);
// Waits for all queued GPU work (no-op without a GPU).
void device_synchronize();
// How many times the host has waited for all queued GPU work so far: device_synchronize, a
// copy to or from host memory through device_copy, a cache trim. Each one drains the queue the
// host keeps ahead of the GPU, so steady-state training makes none (a CUDA test checks it).
int64_t host_stream_syncs();

struct CudaAllocatorStats {
  int64_t malloc_calls = 0;   // cudaMalloc calls so far
  int64_t free_calls = 0;     // cudaFree calls so far (only when the cache is trimmed)
  int64_t bytes_in_use = 0;
  int64_t bytes_cached = 0;
};
CudaAllocatorStats cuda_allocator_stats();
// Returns cached blocks to the driver.
void cuda_empty_cache();

}  // namespace tdrop
