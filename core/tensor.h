// Tensor: a shared handle to (storage, offset, shape, strides, dtype, device) plus autograd state.
// Copies of a Tensor share everything, like torch.Tensor; `clone()` copies the data.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace tdrop {

using Shape = std::vector<int64_t>;
struct Node;

// Owns one device allocation.
struct Storage {
  Storage(size_t bytes, Device device, const char* what);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::CPU;
};

int64_t shape_numel(const Shape& shape);
// Rows of a shape seen as [rows, its last axis], as row-wise ops (softmax, layer norm) see it;
// 0 when the last axis is empty.
int64_t last_axis_rows(const Shape& shape);
Shape contiguous_strides(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;

  // --- creation -------------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device device = Device::CPU);
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            Device device = Device::CPU);

  // --- metadata -------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  bool is_cuda() const { return device() == Device::CUDA; }
  bool is_contiguous() const;
  std::string describe() const;  // e.g. "F32[128, 784] on cpu"

  // --- data -----------------------------------------------------------------------------
  void* raw_data() const;  // pointer to element 0 (offset applied)
  template <class T> T* data() const;  // checks dtype
  const std::shared_ptr<Storage>& storage() const;
  int64_t offset() const;

  // --- views and copies -----------------------------------------------------------------
  Tensor contiguous() const;          // self when already contiguous
  Tensor reshape(const Shape& shape) const;  // a view when contiguous; -1 infers one dim
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;  // a view
  Tensor transpose(int64_t d0, int64_t d1) const;                  // a view
  Tensor to(Device device) const;     // self when already there
  Tensor to(DType dtype) const;       // self when already that type
  Tensor clone() const;               // contiguous deep copy, no autograd history
  void copy_(const Tensor& src);      // same shape; any devices; no autograd
  void zero_();
  // Replaces this tensor's data (storage, shape, dtype, device) with src's, keeping its autograd
  // settings; every handle sharing this tensor sees the change (used to move parameters).
  void set_data(const Tensor& src);
  std::vector<double> to_double_vector() const;  // any dtype/device, row-major order
  template <class T> std::vector<T> to_vector() const;
  double item() const;                // one-element tensors

  // --- autograd -------------------------------------------------------------------------
  bool requires_grad() const;
  Tensor& set_requires_grad(bool on);
  const Tensor& grad() const;
  void set_grad(const Tensor& g);
  const std::shared_ptr<Node>& grad_fn() const;
  void set_grad_fn(std::shared_ptr<Node> fn);
  Tensor detach() const;  // shares data, drops history
  // Runs reverse-mode autodiff from this tensor; a non-scalar needs an explicit seed gradient.
  void backward(const Tensor& seed = Tensor()) const;

  bool same(const Tensor& o) const { return impl_ == o.impl_; }
  // When this handle is the tensor's last owner, detaches and returns its grad_fn so a graph
  // can be torn down iteratively (see ~Node) instead of by deep recursive destructors.
  std::shared_ptr<Node> take_grad_fn_if_last_owner();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
  const Impl& impl(const char* what = "tensor") const;
};

struct Tensor::Impl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape, strides;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;
};

template <class T>
T* Tensor::data() const {
  TDROP_CHECK(dtype() == dtype_of<T>(), "tensor data<", dtype_name(dtype_of<T>()),
              ">() on a tensor of dtype ", dtype_name(dtype()));
  return static_cast<T*>(raw_data());
}

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  TDROP_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ",
              values.size(), " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>(), Device::CPU);
  std::copy(values.begin(), values.end(), t.data<T>());
  return t.to(device);
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor c = to(Device::CPU).contiguous();
  TDROP_CHECK(c.dtype() == dtype_of<T>(), "to_vector<", dtype_name(dtype_of<T>()),
              ">() on a tensor of dtype ", dtype_name(dtype()));
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}

}  // namespace tdrop
