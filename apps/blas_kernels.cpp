// OpenBLAS picks its kernels by CPUID when it is loaded, and a build older than the CPU falls
// back to generic SSE3 ("Prescott") kernels: Debian 12's OpenBLAS 0.3.21 does so on Sapphire and
// Emerald Rapids Xeons, where its matrix products then run 2-3x slower than they can. tdrop asks
// for the AVX2 kernels on every CPU that has AVX2 and FMA instead: fast on all of them, and the
// same GEMM blocking, hence the same fp32 summation order, on every such machine, so a seed gives
// the same numbers whichever of them runs it (for the same number of BLAS threads). The AVX-512
// kernels are up to 1.3x faster on the MLP but sum in another order; OPENBLAS_CORETYPE=SkylakeX
// picks them, as any value the user sets is kept. The workers' spin (kBlasSpinLog2) changes
// when a worker sleeps, never how the work is split: the same bits.
#include "apps/blas_kernels.h"

#include <cblas.h>  // OpenBLAS's, with openblas_get_corename() and the like
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <vector>

namespace tdrop {

namespace {

constexpr const char* kPinnedCore = "Haswell";
constexpr int kPthreads = 1;  // openblas_get_parallel(): 0 sequential, 1 pthreads, 2 OpenMP

bool wants_pinned_core() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         std::strstr(openblas_get_config(), "DYNAMIC_ARCH") != nullptr &&  // else one target
         std::strcmp(openblas_get_corename(), kPinnedCore) != 0;
#else
  return false;
#endif
}

}  // namespace

void configure_blas(char** argv) {
  std::vector<const char*> set;  // the variables this call set, to take back if exec fails
  auto set_default = [&](const char* name, const std::string& value) {
    if (std::getenv(name) == nullptr && ::setenv(name, value.c_str(), 1) == 0) set.push_back(name);
  };
  if (wants_pinned_core()) set_default("OPENBLAS_CORETYPE", kPinnedCore);
  if (openblas_get_parallel() == kPthreads && openblas_get_num_threads() > 1)
    set_default("OPENBLAS_THREAD_TIMEOUT", std::to_string(kBlasSpinLog2));
  if (set.empty()) return;  // the user's choices, or already re-executed
  ::execv("/proc/self/exe", argv);
  for (const char* name : set) ::unsetenv(name);  // exec failed: OpenBLAS's own choices
}

std::string blas_description() {
  const int threads = openblas_get_num_threads();
  return std::string("OpenBLAS ") + openblas_get_corename() + ", " + std::to_string(threads) +
         (threads == 1 ? " thread" : " threads");
}

}  // namespace tdrop
