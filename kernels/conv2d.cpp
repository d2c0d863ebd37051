// CPU convolution: per group, im2col unfolds the receptive fields of a chunk of images into a
// matrix col [C/g*kh*kw, images*Ho*Wo] so that the convolution is one GEMM with the weight rows
// [out/g, C/g*kh*kw]; the backward products are the two transposed GEMMs, with col2im folding
// the data gradient back. Batching images into one GEMM matters for the deep layers, whose
// few output pixels would otherwise make each GEMM a thin matrix-vector product that re-reads
// the whole weight per image. A 1x1, stride-1, unpadded convolution of one image needs no
// unfolding at all. OpenBLAS runs the products on its threads; the unfolding, folding and row
// copies of a chunk's images are split over the same number of threads (core/parallel.h).
#include "kernels/conv2d.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>

#include "core/parallel.h"

namespace tdrop {

Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dParams& p, const char* op) {
  TDROP_CHECK(x.size() == 4, op, ": input ", shape_str(x), " is not [N, C, H, W]");
  TDROP_CHECK(w.size() == 4, op, ": weight ", shape_str(w), " is not [out, in/groups, kh, kw]");
  TDROP_CHECK(p.groups >= 1 && p.stride_h >= 1 && p.stride_w >= 1 && p.dilation_h >= 1 &&
                  p.dilation_w >= 1 && p.pad_h >= 0 && p.pad_w >= 0,
              op, ": invalid parameters stride ", p.stride_h, "x", p.stride_w, ", padding ",
              p.pad_h, "x", p.pad_w, ", dilation ", p.dilation_h, "x", p.dilation_w, ", groups ",
              p.groups);
  TDROP_CHECK(x[1] >= 1 && w[0] >= 1, op, ": input ", shape_str(x), " and weight ", shape_str(w),
              " need at least one channel in and out");
  TDROP_CHECK(x[1] % p.groups == 0 && w[0] % p.groups == 0 && w[1] * p.groups == x[1], op,
              ": input ", shape_str(x), " and weight ", shape_str(w), " do not fit ", p.groups,
              " group(s): need C = in/groups * groups and out divisible by groups");
  const int64_t eff_h = p.dilation_h * (w[2] - 1) + 1, eff_w = p.dilation_w * (w[3] - 1) + 1;
  const int64_t ho = (x[2] + 2 * p.pad_h - eff_h) / p.stride_h + 1;
  const int64_t wo = (x[3] + 2 * p.pad_w - eff_w) / p.stride_w + 1;
  TDROP_CHECK(w[2] >= 1 && w[3] >= 1 && x[2] + 2 * p.pad_h >= eff_h &&
                  x[3] + 2 * p.pad_w >= eff_w,
              op, ": kernel ", w[2], "x", w[3], " (dilation ", p.dilation_h, "x", p.dilation_w,
              ") does not fit input ", shape_str(x), " with padding ", p.pad_h, "x", p.pad_w);
  return {x[0], w[0], ho, wo};
}

namespace {

// Images per GEMM: enough columns to keep the GEMM efficient, within a bounded col buffer.
constexpr int64_t kTargetColumns = 4096;
constexpr int64_t kMaxColElements = int64_t{1} << 22;

struct Geometry {
  int64_t n, c, h, w;        // input
  int64_t o, kh, kw;         // weight
  int64_t ho, wo;            // output
  int64_t groups, cg, og;    // channels per group in and out
  int64_t k, l;              // GEMM inner size (cg*kh*kw) and output pixels (ho*wo)
  int64_t chunk;             // images per GEMM
  bool direct;               // 1x1, stride 1, no padding: col is the input itself
  bool same_width;           // stride 1 and as many output columns as input columns
};

Geometry geometry(const Shape& x, const Shape& w, const Conv2dParams& p) {
  const Shape y = conv2d_output_shape(x, w, p, "conv2d");
  Geometry g{};
  g.n = x[0], g.c = x[1], g.h = x[2], g.w = x[3];
  g.o = w[0], g.kh = w[2], g.kw = w[3];
  g.ho = y[2], g.wo = y[3];
  g.groups = p.groups, g.cg = g.c / p.groups, g.og = g.o / p.groups;
  g.k = g.cg * g.kh * g.kw, g.l = g.ho * g.wo;
  g.chunk = std::clamp<int64_t>(std::min(kTargetColumns / std::max<int64_t>(g.l, 1),
                                         kMaxColElements / std::max<int64_t>(g.k * g.l, 1)),
                                1, std::max<int64_t>(g.n, 1));
  g.direct = g.kh == 1 && g.kw == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 &&
             p.pad_w == 0;
  g.same_width = p.stride_h == 1 && p.stride_w == 1 && g.wo == g.w;
  return g;
}

// Row-major C[m, n] = alpha * op(A) op(B) + beta * C with explicit leading dimensions.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
          int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

// ceil(a / b) for b > 0 and any sign of a.
int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

// The output columns [lo, hi) whose input column ow*sw - pw + j*dw lies inside [0, w): computed
// once per kernel column so that the inner loops below have no bounds tests.
struct ColumnRange {
  int64_t lo, hi, offset;  // input column = ow * sw + offset
};
ColumnRange column_range(const Geometry& g, const Conv2dParams& p, int64_t j) {
  const int64_t offset = j * p.dilation_w - p.pad_w;
  const int64_t lo = std::clamp<int64_t>(ceil_div(-offset, p.stride_w), 0, g.wo);
  const int64_t hi = std::clamp<int64_t>(ceil_div(g.w - offset, p.stride_w), lo, g.wo);
  return {lo, hi, offset};
}

// One unfolded row (kernel tap i, j) of a same-width geometry: output pixel oh*wo + ow reads
// input pixel (oh + a)*w + ow + r.offset, a fixed shift of the plane, so its rows inside the
// input are one contiguous run, copied in one go (the image's rows one call each would be many
// short calls: 32 of 128 bytes in ResNet-32's first stage). The copy also fills the columns
// that lie in the padding, with pixels of the neighbouring rows: those are zeroed after.
template <class T>
void im2col_same_width(const T* plane, const Geometry& g, const Conv2dParams& p, int64_t i,
                       const ColumnRange& r, T* out) {
  const int64_t a = i * p.dilation_h - p.pad_h;
  const int64_t lo = std::clamp<int64_t>(-a, 0, g.ho), hi = std::clamp<int64_t>(g.h - a, lo, g.ho);
  // Every row or every column in the padding: nothing to copy (and the copy's source below
  // would not lie inside the plane).
  if (lo == hi || r.lo == r.hi) {
    std::fill(out, out + g.ho * g.wo, T(0));
    return;
  }
  std::fill(out, out + lo * g.wo, T(0));
  std::fill(out + hi * g.wo, out + g.ho * g.wo, T(0));
  const int64_t first = lo * g.wo + r.lo, last = (hi - 1) * g.wo + r.hi;  // in bounds, both
  const T* src = plane + (lo + a) * g.w + r.lo + r.offset;
  std::copy(src, src + (last - first), out + first);
  const auto zero_column = [&](int64_t ow) {
    for (int64_t oh = lo; oh < hi; ++oh) out[oh * g.wo + ow] = T(0);
  };
  for (int64_t ow = 0; ow < r.lo; ++ow) zero_column(ow);
  for (int64_t ow = r.hi; ow < g.wo; ++ow) zero_column(ow);
}

// col[(ci*kh + i)*kw + j, oh*wo + ow] = x[ci, oh*sh - ph + i*dh, ow*sw - pw + j*dw] (0 outside),
// with col rows `ld` apart. `x` points at the group's first channel of one image.
template <class T>
void im2col(const T* x, const Geometry& g, const Conv2dParams& p, T* col, int64_t ld) {
  for (int64_t ci = 0; ci < g.cg; ++ci)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        T* row = col + ((ci * g.kh + i) * g.kw + j) * ld;
        const T* plane = x + ci * g.h * g.w;
        const ColumnRange r = column_range(g, p, j);
        if (g.same_width) {
          im2col_same_width(plane, g, p, i, r, row);
          continue;
        }
        for (int64_t oh = 0; oh < g.ho; ++oh) {
          T* out = row + oh * g.wo;
          const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dilation_h;
          if (ih < 0 || ih >= g.h) {
            std::fill(out, out + g.wo, T(0));
            continue;
          }
          const T* src = plane + ih * g.w + r.offset;
          std::fill(out, out + r.lo, T(0));
          if (p.stride_w == 1)
            std::copy(src + r.lo, src + r.hi, out + r.lo);
          else
            for (int64_t ow = r.lo; ow < r.hi; ++ow) out[ow] = src[ow * p.stride_w];
          std::fill(out + r.hi, out + g.wo, T(0));
        }
      }
}

// The adjoint of im2col: adds every col entry back onto the input pixel it was read from.
template <class T>
void col2im_add(const T* col, const Geometry& g, const Conv2dParams& p, T* gx, int64_t ld) {
  for (int64_t ci = 0; ci < g.cg; ++ci)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        const T* row = col + ((ci * g.kh + i) * g.kw + j) * ld;
        T* plane = gx + ci * g.h * g.w;
        const ColumnRange r = column_range(g, p, j);
        for (int64_t oh = 0; oh < g.ho; ++oh) {
          const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dilation_h;
          if (ih < 0 || ih >= g.h) continue;
          const T* in = row + oh * g.wo;
          T* dst = plane + ih * g.w + r.offset;
          for (int64_t ow = r.lo; ow < r.hi; ++ow) dst[ow * p.stride_w] += in[ow];
        }
      }
}

// Unfolding moves strided entries one by one, and whole images at a time: a range of 256K
// entries or more (finer splits of ResNet-32's convolutions measured no faster on 2 cores).
constexpr int64_t kUnfoldGrain = int64_t{1} << 18;

// Copies rows [rows, l] of images n0.. n0+nb-1 (channel offset c0 of `channels`) between the
// NCHW tensor and a [rows, nb*l] matrix.
template <class T>
void gather_rows(const T* t, int64_t channels, int64_t c0, int64_t rows, int64_t l, int64_t n0,
                 int64_t nb, T* m) {
  parallel_for(rows, grain_for(nb * l), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      for (int64_t i = 0; i < nb; ++i)
        std::memcpy(m + r * nb * l + i * l, t + ((n0 + i) * channels + c0 + r) * l,
                    sizeof(T) * static_cast<size_t>(l));
  });
}
template <class T>
void scatter_rows(const T* m, int64_t channels, int64_t c0, int64_t rows, int64_t l, int64_t n0,
                  int64_t nb, T* t) {
  parallel_for(rows, grain_for(nb * l), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      for (int64_t i = 0; i < nb; ++i)
        std::memcpy(t + ((n0 + i) * channels + c0 + r) * l, m + r * nb * l + i * l,
                    sizeof(T) * static_cast<size_t>(l));
  });
}

// Host scratch of `count` T, left uninitialized: each user writes it before reading it (im2col,
// a gather or a GEMM with beta 0), and a tensor's storage comes from the host cache.
template <class T>
T* scratch(Tensor& keep, int64_t count) {
  keep = Tensor::empty({count}, dtype_of<T>(), Device::CPU);
  return keep.data<T>();
}

// The unfolded input of images n0.. n0+nb-1 for group grp: [k, nb*l]. Points straight into x
// when a single image needs no unfolding.
template <class T>
const T* unfold(const T* x, const Geometry& g, const Conv2dParams& p, int64_t n0, int64_t nb,
                int64_t grp, T* col) {
  const int64_t plane = g.h * g.w;
  if (g.direct && nb == 1) return x + (n0 * g.c + grp * g.cg) * plane;
  if (g.direct) {
    gather_rows(x, g.c, grp * g.cg, g.cg, plane, n0, nb, col);
  } else {  // images unfold into disjoint columns of col
    parallel_for(nb, grain_for(g.k * g.l, kUnfoldGrain), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        im2col(x + ((n0 + i) * g.c + grp * g.cg) * plane, g, p, col + i * g.l, nb * g.l);
    });
  }
  return col;
}

template <class T>
void forward_typed(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p,
                   const Tensor& y) {
  const Geometry g = geometry(x.shape(), w.shape(), p);
  const T* px = x.data<T>();
  const T* pw = w.data<T>();
  T* py = y.data<T>();
  Tensor col_t, out_t;
  T* col = scratch<T>(col_t, g.k * g.chunk * g.l);
  T* out = scratch<T>(out_t, g.chunk > 1 ? g.og * g.chunk * g.l : 0);
  for (int64_t n0 = 0; n0 < g.n; n0 += g.chunk) {
    const int64_t nb = std::min(g.chunk, g.n - n0);
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const T* b = unfold(px, g, p, n0, nb, grp, col);
      // y_g [og, nb*l] = W_g [og, k] @ col [k, nb*l]; one image is written in place.
      T* dst = nb == 1 ? py + (n0 * g.o + grp * g.og) * g.l : out;
      gemm(false, false, g.og, nb * g.l, g.k, T(1), pw + grp * g.og * g.k, g.k, b, nb * g.l, T(0),
           dst, nb * g.l);
      if (nb > 1) scatter_rows(out, g.o, grp * g.og, g.og, g.l, n0, nb, py);
    }
  }
  if (!bias.defined()) return;
  const T* pb = bias.data<T>();
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t o = 0; o < g.o; ++o) {
      T* row = py + (n * g.o + o) * g.l;
      for (int64_t i = 0; i < g.l; ++i) row[i] += pb[o];
    }
}

template <class T>
void backward_data_typed(const Tensor& gy, const Tensor& w, const Conv2dParams& p,
                         const Tensor& gx) {
  const Geometry g = geometry(gx.shape(), w.shape(), p);
  const T* pgy = gy.data<T>();
  const T* pw = w.data<T>();
  T* pgx = gx.data<T>();
  const int64_t plane = g.h * g.w;
  if (!g.direct) std::memset(pgx, 0, sizeof(T) * static_cast<size_t>(gx.numel()));
  Tensor col_t, grad_t;
  T* col = scratch<T>(col_t, g.k * g.chunk * g.l);
  T* grad = scratch<T>(grad_t, g.chunk > 1 ? g.og * g.chunk * g.l : 0);
  for (int64_t n0 = 0; n0 < g.n; n0 += g.chunk) {
    const int64_t nb = std::min(g.chunk, g.n - n0);
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const T* gyg = pgy + (n0 * g.o + grp * g.og) * g.l;
      if (nb > 1) {
        gather_rows(pgy, g.o, grp * g.og, g.og, g.l, n0, nb, grad);
        gyg = grad;
      }
      // gcol [k, nb*l] = W_g^T [k, og] @ gy_g [og, nb*l]; a direct single image lands in gx.
      T* gcol = g.direct && nb == 1 ? pgx + (n0 * g.c + grp * g.cg) * plane : col;
      gemm(true, false, g.k, nb * g.l, g.og, T(1), pw + grp * g.og * g.k, g.k, gyg, nb * g.l,
           T(0), gcol, nb * g.l);
      if (g.direct && nb > 1) scatter_rows(gcol, g.c, grp * g.cg, g.cg, plane, n0, nb, pgx);
      if (!g.direct)  // images fold back into disjoint parts of gx
        parallel_for(nb, grain_for(g.k * g.l, kUnfoldGrain), [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i)
            col2im_add(gcol + i * g.l, g, p, pgx + ((n0 + i) * g.c + grp * g.cg) * plane,
                       nb * g.l);
        });
    }
  }
}

template <class T>
void backward_filter_typed(const Tensor& gy, const Tensor& x, const Conv2dParams& p,
                           const Tensor& gw) {
  const Geometry g = geometry(x.shape(), gw.shape(), p);
  const T* pgy = gy.data<T>();
  const T* px = x.data<T>();
  T* pgw = gw.data<T>();
  if (g.n == 0) std::memset(pgw, 0, sizeof(T) * static_cast<size_t>(gw.numel()));
  Tensor col_t, grad_t;
  T* col = scratch<T>(col_t, g.k * g.chunk * g.l);
  T* grad = scratch<T>(grad_t, g.chunk > 1 ? g.og * g.chunk * g.l : 0);
  for (int64_t n0 = 0; n0 < g.n; n0 += g.chunk) {
    const int64_t nb = std::min(g.chunk, g.n - n0);
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const T* b = unfold(px, g, p, n0, nb, grp, col);
      const T* gyg = pgy + (n0 * g.o + grp * g.og) * g.l;
      if (nb > 1) {
        gather_rows(pgy, g.o, grp * g.og, g.og, g.l, n0, nb, grad);
        gyg = grad;
      }
      // gW_g [og, k] (+)= gy_g [og, nb*l] @ col^T [nb*l, k], summed over the chunks.
      gemm(false, true, g.og, g.k, nb * g.l, T(1), gyg, nb * g.l, b, nb * g.l,
           n0 == 0 ? T(0) : T(1), pgw + grp * g.og * g.k, g.k);
    }
  }
}

template <class T>
void backward_bias_typed(const Tensor& gy, const Tensor& gb) {
  const int64_t n = gy.size(0), c = gy.size(1), l = gy.size(2) * gy.size(3);
  const T* p = gy.data<T>();
  T* out = gb.data<T>();
  for (int64_t o = 0; o < c; ++o) {
    double acc = 0;  // double accumulation, as the reductions in kernels/reduce do
    for (int64_t i = 0; i < n; ++i) {
      const T* row = p + (i * c + o) * l;
      for (int64_t j = 0; j < l; ++j) acc += static_cast<double>(row[j]);
    }
    out[o] = static_cast<T>(acc);
  }
}

}  // namespace

void conv2d_forward_cpu(const Tensor& x, const Tensor& w, const Tensor& bias,
                        const Conv2dParams& p, const Tensor& y) {
  if (y.numel() == 0) return;
  if (x.dtype() == DType::F32) forward_typed<float>(x, w, bias, p, y);
  else forward_typed<double>(x, w, bias, p, y);
}

void conv2d_backward_data_cpu(const Tensor& gy, const Tensor& w, const Conv2dParams& p,
                              const Tensor& gx) {
  if (gx.numel() == 0) return;
  if (gy.dtype() == DType::F32) backward_data_typed<float>(gy, w, p, gx);
  else backward_data_typed<double>(gy, w, p, gx);
}

void conv2d_backward_filter_cpu(const Tensor& gy, const Tensor& x, const Conv2dParams& p,
                                const Tensor& gw) {
  if (gy.dtype() == DType::F32) backward_filter_typed<float>(gy, x, p, gw);
  else backward_filter_typed<double>(gy, x, p, gw);
}

void conv2d_backward_bias_cpu(const Tensor& gy, const Tensor& gb) {
  if (gy.dtype() == DType::F32) backward_bias_typed<float>(gy, gb);
  else backward_bias_typed<double>(gy, gb);
}

}  // namespace tdrop
