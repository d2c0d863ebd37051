// OpenBLAS picks its kernels by CPUID when it is loaded, and a build older than the CPU falls
// back to generic SSE3 ("Prescott") kernels: Debian 12's OpenBLAS 0.3.21 does so on Sapphire and
// Emerald Rapids Xeons, where its matrix products then run 2-3x slower than they can. tdrop asks
// for the AVX2 kernels on every CPU that has AVX2 and FMA instead: fast on all of them, and the
// same GEMM blocking, hence the same fp32 summation order, on every such machine, so a seed gives
// the same numbers whichever of them runs it (for the same number of BLAS threads). The AVX-512
// kernels are up to 1.3x faster on the MLP but sum in another order; OPENBLAS_CORETYPE=SkylakeX
// picks them, as any value the user sets is kept.
#include "apps/blas_kernels.h"

#include <cblas.h>  // OpenBLAS's, with openblas_get_corename() and the like
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace tdrop {

namespace {
constexpr const char* kPinnedCore = "Haswell";
}  // namespace

void pin_blas_kernels(char** argv) {
#if defined(__x86_64__)
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // the user's choice, or done
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return;
  if (std::strstr(openblas_get_config(), "DYNAMIC_ARCH") == nullptr) return;  // one target only
  if (std::strcmp(openblas_get_corename(), kPinnedCore) == 0) return;
  if (::setenv("OPENBLAS_CORETYPE", kPinnedCore, 1) != 0) return;
  ::execv("/proc/self/exe", argv);
  ::unsetenv("OPENBLAS_CORETYPE");  // exec failed: carry on with OpenBLAS's own choice
#else
  (void)argv;
#endif
}

std::string blas_description() {
  const int threads = openblas_get_num_threads();
  return std::string("OpenBLAS ") + openblas_get_corename() + ", " + std::to_string(threads) +
         (threads == 1 ? " thread" : " threads");
}

}  // namespace tdrop
