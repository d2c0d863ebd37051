// Which OpenBLAS kernels the tdrop process computes with, and why it chooses them itself.
#pragma once
#include <string>

namespace tdrop {

// On an x86-64 CPU with AVX2 and FMA, makes OpenBLAS use its AVX2 ("Haswell") kernels unless
// OPENBLAS_CORETYPE already names a choice. OpenBLAS reads that variable only when it is loaded,
// so this re-executes the program once with it set (argv unchanged); it returns when nothing is
// to be done or the re-execution failed (OpenBLAS then keeps its own choice).
void pin_blas_kernels(char** argv);

// "OpenBLAS Haswell, 2 threads": the kernels and threads CPU matrix products run on.
std::string blas_description();

}  // namespace tdrop
