#include "kernels/pool.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace tdrop {

Shape pool2d_output_shape(const Shape& x, const Pool2dParams& p, const char* op) {
  TDROP_CHECK(x.size() == 4, op, ": input ", shape_str(x), " is not [N, C, H, W]");
  TDROP_CHECK(p.kernel_h >= 1 && p.kernel_w >= 1 && p.stride_h >= 1 && p.stride_w >= 1 &&
                  p.pad_h >= 0 && p.pad_w >= 0 && 2 * p.pad_h <= p.kernel_h &&
                  2 * p.pad_w <= p.kernel_w,
              op, ": invalid window ", p.kernel_h, "x", p.kernel_w, ", stride ", p.stride_h, "x",
              p.stride_w, ", padding ", p.pad_h, "x", p.pad_w,
              " (padding may be at most half the window)");
  // Padding can make a window "fit" an input of no pixels; every window would then be empty.
  TDROP_CHECK(x[2] > 0 && x[3] > 0, op, ": input ", shape_str(x), " has no pixels");
  TDROP_CHECK(x[2] + 2 * p.pad_h >= p.kernel_h && x[3] + 2 * p.pad_w >= p.kernel_w, op,
              ": window ", p.kernel_h, "x", p.kernel_w, " does not fit input ", shape_str(x),
              " with padding ", p.pad_h, "x", p.pad_w);
  return {x[0], x[1], (x[2] + 2 * p.pad_h - p.kernel_h) / p.stride_h + 1,
          (x[3] + 2 * p.pad_w - p.kernel_w) / p.stride_w + 1};
}

namespace {

struct Planes {
  int64_t planes, h, w, ho, wo;
};
Planes planes(const Tensor& x, const Tensor& y) {
  return {x.size(0) * x.size(1), x.size(2), x.size(3), y.size(2), y.size(3)};
}

template <class T>
void max_forward(const Tensor& x, const Pool2dParams& p, const Tensor& y, const Tensor& argmax) {
  const Planes d = planes(x, y);
  const T* px = x.data<T>();
  T* py = y.data<T>();
  int64_t* pa = argmax.data<int64_t>();
  for (int64_t pl = 0; pl < d.planes; ++pl) {
    const T* in = px + pl * d.h * d.w;
    for (int64_t oh = 0; oh < d.ho; ++oh)
      for (int64_t ow = 0; ow < d.wo; ++ow) {
        const int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
        int64_t best = -1;
        T best_v = T(0);
        for (int64_t ih = std::max<int64_t>(h0, 0); ih < std::min(h0 + p.kernel_h, d.h); ++ih)
          for (int64_t iw = std::max<int64_t>(w0, 0); iw < std::min(w0 + p.kernel_w, d.w); ++iw) {
            const T v = in[ih * d.w + iw];
            if (best < 0 || (!std::isnan(best_v) && (v > best_v || std::isnan(v)))) {
              best = ih * d.w + iw;
              best_v = v;
            }
          }
        const int64_t o = (pl * d.ho + oh) * d.wo + ow;
        py[o] = best_v;
        pa[o] = best;
      }
  }
}

template <class T>
void max_backward(const Tensor& gy, const Tensor& argmax, const Tensor& gx) {
  const Planes d = planes(gx, gy);
  const T* pg = gy.data<T>();
  const int64_t* pa = argmax.data<int64_t>();
  T* out = gx.data<T>();
  std::memset(out, 0, sizeof(T) * static_cast<size_t>(gx.numel()));
  // Outputs in row-major order: each pixel receives its windows' gradients in that order, the
  // order the CUDA gather adds them in.
  for (int64_t pl = 0; pl < d.planes; ++pl)
    for (int64_t o = 0; o < d.ho * d.wo; ++o) {
      const int64_t k = pl * d.ho * d.wo + o;
      out[pl * d.h * d.w + pa[k]] += pg[k];
    }
}

template <class T>
void avg_forward(const Tensor& x, const Pool2dParams& p, const Tensor& y) {
  const Planes d = planes(x, y);
  const T* px = x.data<T>();
  T* py = y.data<T>();
  const T area = static_cast<T>(p.kernel_h * p.kernel_w);
  for (int64_t pl = 0; pl < d.planes; ++pl) {
    const T* in = px + pl * d.h * d.w;
    for (int64_t oh = 0; oh < d.ho; ++oh)
      for (int64_t ow = 0; ow < d.wo; ++ow) {
        const int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
        T acc = T(0);
        for (int64_t ih = std::max<int64_t>(h0, 0); ih < std::min(h0 + p.kernel_h, d.h); ++ih)
          for (int64_t iw = std::max<int64_t>(w0, 0); iw < std::min(w0 + p.kernel_w, d.w); ++iw)
            acc += in[ih * d.w + iw];
        py[(pl * d.ho + oh) * d.wo + ow] = acc / area;
      }
  }
}

template <class T>
void avg_backward(const Tensor& gy, const Pool2dParams& p, const Tensor& gx) {
  const Planes d = planes(gx, gy);
  const T* pg = gy.data<T>();
  T* out = gx.data<T>();
  std::memset(out, 0, sizeof(T) * static_cast<size_t>(gx.numel()));
  const T area = static_cast<T>(p.kernel_h * p.kernel_w);
  for (int64_t pl = 0; pl < d.planes; ++pl) {
    T* plane = out + pl * d.h * d.w;
    for (int64_t oh = 0; oh < d.ho; ++oh)
      for (int64_t ow = 0; ow < d.wo; ++ow) {
        const T v = pg[(pl * d.ho + oh) * d.wo + ow] / area;
        const int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
        for (int64_t ih = std::max<int64_t>(h0, 0); ih < std::min(h0 + p.kernel_h, d.h); ++ih)
          for (int64_t iw = std::max<int64_t>(w0, 0); iw < std::min(w0 + p.kernel_w, d.w); ++iw)
            plane[ih * d.w + iw] += v;
      }
  }
}

template <class T>
void gap_forward(const Tensor& x, const Tensor& y) {
  const int64_t planes = x.size(0) * x.size(1), hw = x.size(2) * x.size(3);
  const T* px = x.data<T>();
  T* py = y.data<T>();
  for (int64_t pl = 0; pl < planes; ++pl) {
    double acc = 0;
    for (int64_t i = 0; i < hw; ++i) acc += static_cast<double>(px[pl * hw + i]);
    py[pl] = static_cast<T>(acc / static_cast<double>(hw));
  }
}

template <class T>
void gap_backward(const Tensor& gy, const Tensor& gx) {
  const int64_t planes = gx.size(0) * gx.size(1), hw = gx.size(2) * gx.size(3);
  const T* pg = gy.data<T>();
  T* out = gx.data<T>();
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T v = static_cast<T>(static_cast<double>(pg[pl]) / static_cast<double>(hw));
    std::fill(out + pl * hw, out + (pl + 1) * hw, v);
  }
}

}  // namespace

void max_pool2d_forward_cpu(const Tensor& x, const Pool2dParams& p, const Tensor& y,
                            const Tensor& argmax) {
  if (x.dtype() == DType::F32) max_forward<float>(x, p, y, argmax);
  else max_forward<double>(x, p, y, argmax);
}

void max_pool2d_backward_cpu(const Tensor& gy, const Tensor& argmax, const Pool2dParams&,
                             const Tensor& gx) {
  if (gy.dtype() == DType::F32) max_backward<float>(gy, argmax, gx);
  else max_backward<double>(gy, argmax, gx);
}

void avg_pool2d_forward_cpu(const Tensor& x, const Pool2dParams& p, const Tensor& y) {
  if (x.dtype() == DType::F32) avg_forward<float>(x, p, y);
  else avg_forward<double>(x, p, y);
}

void avg_pool2d_backward_cpu(const Tensor& gy, const Pool2dParams& p, const Tensor& gx) {
  if (gy.dtype() == DType::F32) avg_backward<float>(gy, p, gx);
  else avg_backward<double>(gy, p, gx);
}

void global_avg_pool_forward_cpu(const Tensor& x, const Tensor& y) {
  if (x.dtype() == DType::F32) gap_forward<float>(x, y);
  else gap_forward<double>(x, y);
}

void global_avg_pool_backward_cpu(const Tensor& gy, const Tensor& gx) {
  if (gy.dtype() == DType::F32) gap_backward<float>(gy, gx);
  else gap_backward<double>(gy, gx);
}

}  // namespace tdrop
