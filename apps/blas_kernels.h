// How the tdrop process sets up OpenBLAS (its kernels and its worker threads), and why it
// chooses them itself.
#pragma once
#include <string>

namespace tdrop {

// OpenBLAS reads its settings from the environment only when it is loaded, so this sets those
// the user left unset and re-executes the program once (argv unchanged); it returns when
// nothing is to be done or the re-execution failed (OpenBLAS then keeps its own choices):
// - on an x86-64 CPU with AVX2 and FMA, OPENBLAS_CORETYPE=Haswell: the AVX2 kernels;
// - with a threaded OpenBLAS, OPENBLAS_THREAD_TIMEOUT=kBlasSpinLog2: how long an idle BLAS
//   worker spins before it sleeps.
void configure_blas(char** argv);

// An idle OpenBLAS worker spins (with sched_yield) for 2^28 cycles, about 0.1 s, by default,
// and so competes for the cores with tdrop's own threads (unfolding images, batch norm,
// targeted-dropout selection) between matrix products. 2^16 cycles (tens of microseconds)
// still covers the gaps between a layer's back-to-back products. On 2 cores (medians of 5,
// bench/blas_spin.sh, bench/results/2026-11-28-cpu/blas-spin.txt): ResNet-32 trains at 190
// images/s instead of 163 on 48 CPU seconds instead of 88, the MLP with targeted dropout at
// 77K instead of 64K, the plain MLP as fast.
constexpr int kBlasSpinLog2 = 16;

// "OpenBLAS Haswell, 2 threads": the kernels and threads CPU matrix products run on.
std::string blas_description();

}  // namespace tdrop
