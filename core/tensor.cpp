#include "core/tensor.h"

#include <algorithm>

#include "core/autograd.h"
#include "core/copy.h"

namespace tdrop {

Storage::Storage(size_t n, Device d, const char* what)
    : data(device_alloc(d, n, what)), bytes(n), device(d) {}
Storage::~Storage() { device_free(device, data, bytes); }

int64_t shape_numel(const Shape& shape) {
  // The bound is on the product of the dimensions counted as at least 1 (the largest stride
  // times its size), so an empty tensor cannot carry strides that overflow either, whatever the
  // order of its dimensions.
  int64_t n = 1, span = 1;
  for (int64_t s : shape) {
    TDROP_CHECK(s >= 0, "negative dimension in shape ", shape_str(shape));
    const int64_t at_least_1 = std::max<int64_t>(s, 1);
    TDROP_CHECK(span <= (int64_t{1} << 50) / at_least_1, "shape ", shape_str(shape),
                " has too many elements");
    span *= at_least_1;
    n *= s;
  }
  return n;
}

int64_t last_axis_rows(const Shape& shape) {
  return shape.empty() || shape.back() == 0 ? 0 : shape_numel(shape) / shape.back();
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    st[i] = s;
    s *= std::max<int64_t>(shape[i], 1);
  }
  return st;
}

const Tensor::Impl& Tensor::impl(const char* what) const {
  TDROP_CHECK(impl_ != nullptr, what, ": use of an undefined tensor");
  return *impl_;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.impl_ = std::make_shared<Impl>();
  const int64_t n = shape_numel(shape);
  try {
    t.impl_->storage = std::make_shared<Storage>(static_cast<size_t>(n) * dtype_size(dtype),
                                                 device, "Tensor::empty");
  } catch (const Error& e) {  // out of memory: say for which tensor
    fail(e.what(), " (for a tensor ", dtype_name(dtype), shape_str(shape), ")");
  }
  t.impl_->shape = shape;
  t.impl_->strides = contiguous_strides(shape);
  t.impl_->dtype = dtype;
  t.impl_->device = device;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (device == Device::CPU) fill_cpu(t, value);
  else fill_cuda(t, value);
  return t;
}

const Shape& Tensor::shape() const { return impl("shape").shape; }
const Shape& Tensor::strides() const { return impl("strides").strides; }
int64_t Tensor::size(int64_t dim_arg) const {
  const int64_t n = dim(), d = dim_arg < 0 ? dim_arg + n : dim_arg;
  TDROP_CHECK(d >= 0 && d < n, "size(", dim_arg, ") out of range for ", describe());
  return shape()[d];
}
int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape()) n *= s;
  return n;
}
DType Tensor::dtype() const { return impl("dtype").dtype; }
Device Tensor::device() const { return impl("device").device; }
const std::shared_ptr<Storage>& Tensor::storage() const { return impl("storage").storage; }
int64_t Tensor::offset() const { return impl("offset").offset; }

bool Tensor::is_contiguous() const {
  const Impl& m = impl("is_contiguous");
  if (numel() == 0) return true;  // nothing to lay out
  int64_t expect = 1;
  for (size_t i = m.shape.size(); i-- > 0;) {
    if (m.shape[i] == 1) continue;
    if (m.strides[i] != expect) return false;
    expect *= m.shape[i];
  }
  return true;
}

std::string Tensor::describe() const {
  if (!impl_) return "undefined tensor";
  return std::string(dtype_name(dtype())) + shape_str(shape()) + " on " + device_name(device());
}

void* Tensor::raw_data() const {
  const Impl& m = impl("data");
  return static_cast<char*>(m.storage->data) + m.offset * static_cast<int64_t>(dtype_size(m.dtype));
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = empty(shape(), dtype(), device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::reshape(const Shape& new_shape) const {
  Shape s = new_shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      TDROP_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(new_shape));
      infer = static_cast<int64_t>(i);
    } else {
      TDROP_CHECK(s[i] >= 0, "reshape: bad dimension in ", shape_str(new_shape));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    TDROP_CHECK(known > 0 && numel() % known == 0, "reshape: cannot infer -1 in ",
                shape_str(new_shape), " for ", describe());
    s[infer] = numel() / known;
  }
  TDROP_CHECK(shape_numel(s) == numel(), "reshape: ", describe(), " cannot become ", shape_str(s));
  Tensor src = contiguous();
  Tensor v;
  v.impl_ = std::make_shared<Impl>(*src.impl_);
  v.impl_->shape = s;
  v.impl_->strides = contiguous_strides(s);
  v.impl_->grad = Tensor();
  // A view shares data; its gradient flows back through a reshape node (see kernels/shape_ops).
  v.impl_->grad_fn = nullptr;
  v.impl_->requires_grad = false;
  return v;
}

Tensor Tensor::narrow(int64_t dim_arg, int64_t start, int64_t length) const {
  const int64_t n = dim(), d = dim_arg < 0 ? dim_arg + n : dim_arg;
  TDROP_CHECK(d >= 0 && d < n, "narrow: dim ", dim_arg, " out of range for ", describe());
  // start + length could overflow; compared as length <= size - start, it cannot.
  TDROP_CHECK(start >= 0 && length >= 0 && start <= shape()[d] && length <= shape()[d] - start,
              "narrow: start ", start, " and length ", length, " out of range on dim ", d, " of ",
              describe());
  Tensor v;
  v.impl_ = std::make_shared<Impl>(impl());
  v.impl_->shape[d] = length;
  v.impl_->offset += start * v.impl_->strides[d];
  v.impl_->grad = Tensor();
  v.impl_->grad_fn = nullptr;
  v.impl_->requires_grad = false;
  return v;
}

Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
  const int64_t n = dim(), d0 = dim0 < 0 ? dim0 + n : dim0, d1 = dim1 < 0 ? dim1 + n : dim1;
  TDROP_CHECK(d0 >= 0 && d0 < n && d1 >= 0 && d1 < n, "transpose(", dim0, ", ", dim1,
              ") out of range for ", describe());
  Tensor v;
  v.impl_ = std::make_shared<Impl>(impl());
  std::swap(v.impl_->shape[d0], v.impl_->shape[d1]);
  std::swap(v.impl_->strides[d0], v.impl_->strides[d1]);
  v.impl_->grad = Tensor();
  v.impl_->grad_fn = nullptr;
  v.impl_->requires_grad = false;
  return v;
}

Tensor Tensor::to(Device d) const {
  if (device() == d) return *this;
  Tensor src = contiguous();
  Tensor out = empty(shape(), dtype(), d);
  device_copy(out.raw_data(), d, src.raw_data(), src.device(),
              static_cast<size_t>(numel()) * dtype_size(dtype()));
  return out;
}

Tensor Tensor::to(DType t) const {
  if (dtype() == t) return *this;
  Tensor out = empty(shape(), t, device());
  if (device() == Device::CPU) copy_cast_cpu(*this, out);
  else copy_cast_cuda(*this, out);
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  out.copy_(*this);
  return out;
}

void Tensor::copy_(const Tensor& src) {
  TDROP_CHECK(shape() == src.shape(), "copy_: source ", src.describe(), " does not match ",
              describe());
  TDROP_CHECK(is_contiguous(), "copy_: destination must be contiguous, got ", describe());
  Tensor s = src;
  if (s.storage() == storage()) {
    if (s.offset() == offset() && s.strides() == strides()) return;  // the same elements
    // Overlapping views (t.copy_(t.transpose(0, 1))): an element-by-element copy would read
    // entries it has already overwritten, so the source is copied out first.
    s = src.clone();
  }
  if (s.device() != device()) s = s.contiguous().to(device());
  if (device() == Device::CPU) copy_cast_cpu(s, *this);
  else copy_cast_cuda(s, *this);
}

void Tensor::zero_() {
  TDROP_CHECK(is_contiguous(), "zero_: tensor must be contiguous, got ", describe());
  device_memset_zero(device(), raw_data(), static_cast<size_t>(numel()) * dtype_size(dtype()));
}

void Tensor::set_data(const Tensor& src) {
  TDROP_CHECK(impl_ && src.impl_, "set_data: undefined tensor");
  impl_->storage = src.impl_->storage;
  impl_->offset = src.impl_->offset;
  impl_->shape = src.impl_->shape;
  impl_->strides = src.impl_->strides;
  impl_->dtype = src.impl_->dtype;
  impl_->device = src.impl_->device;
  impl_->grad = Tensor();
}

std::vector<double> Tensor::to_double_vector() const {
  return to(Device::CPU).to(DType::F64).contiguous().to_vector<double>();
}

double Tensor::item() const {
  TDROP_CHECK(numel() == 1, "item(): tensor ", describe(), " does not have exactly one element");
  return to_double_vector()[0];
}

bool Tensor::requires_grad() const { return impl("requires_grad").requires_grad; }
Tensor& Tensor::set_requires_grad(bool on) {
  TDROP_CHECK(impl_, "set_requires_grad on an undefined tensor");
  TDROP_CHECK(!on || dtype() == DType::F32 || dtype() == DType::F64,
              "only floating-point tensors can require gradients, got ", describe());
  // A computed tensor's gradient flows on to its inputs; to stop it, take detach().
  TDROP_CHECK(on || !impl_->grad_fn, "set_requires_grad(false) on ", describe(),
              ", the output of an op: use detach() for a tensor without a gradient");
  impl_->requires_grad = on;
  return *this;
}
const Tensor& Tensor::grad() const { return impl("grad").grad; }
void Tensor::set_grad(const Tensor& g) {
  TDROP_CHECK(impl_, "set_grad on an undefined tensor");
  impl_->grad = g;
}
const std::shared_ptr<Node>& Tensor::grad_fn() const { return impl("grad_fn").grad_fn; }
void Tensor::set_grad_fn(std::shared_ptr<Node> fn) {
  TDROP_CHECK(impl_, "set_grad_fn on an undefined tensor");
  impl_->grad_fn = std::move(fn);
}

std::shared_ptr<Node> Tensor::take_grad_fn_if_last_owner() {
  if (!impl_ || impl_.use_count() != 1) return nullptr;
  return std::move(impl_->grad_fn);
}

Tensor Tensor::detach() const {
  Tensor v;
  v.impl_ = std::make_shared<Impl>(impl("detach"));
  v.impl_->grad = Tensor();
  v.impl_->grad_fn = nullptr;
  v.impl_->requires_grad = false;
  return v;
}

void Tensor::backward(const Tensor& seed) const {
  TDROP_CHECK(requires_grad(), "backward: ", describe(), " does not require a gradient");
  Tensor s = seed;
  if (!s.defined()) {
    TDROP_CHECK(numel() == 1, "backward: ", describe(),
                " is not a scalar; pass a seed gradient of the same shape");
    s = full(shape(), 1.0, dtype(), device());
  }
  TDROP_CHECK(s.shape() == shape() && s.dtype() == dtype() && s.device() == device(),
              "backward: seed ", s.describe(), " does not match ", describe());
  run_backward(*this, s);
}

}  // namespace tdrop
