// Checked cuDNN calls: a failure names cuDNN's reason, the call and where it was made.
#pragma once
#include <cudnn.h>

#include "core/error.h"

#define TDROP_CUDNN_CHECK(expr)                                                          \
  do {                                                                                   \
    cudnnStatus_t st_ = (expr);                                                          \
    if (st_ != CUDNN_STATUS_SUCCESS)                                                     \
      ::tdrop::fail("cuDNN error: ", cudnnGetErrorString(st_), " in ", #expr, " (",      \
                    __FILE__, ":", __LINE__, ")");                                       \
  } while (0)
