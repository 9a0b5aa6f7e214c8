// Tensor: a cheap handle to shared storage with shape, strides (in elements), offset, dtype and device.
// Views (slice, reshape of contiguous data, transpose, permute) share storage and copy nothing.
// Operations that need a kernel (contiguous copies, device transfers, casts, fills) live in coat/ops.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "coat/core/dtype.h"
#include "coat/core/error.h"
#include "coat/core/storage.h"

namespace coat {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);
int64_t shape_numel(const Shape& shape);
/// Row-major strides of a shape.
Shape contiguous_strides(const Shape& shape);

class Tensor {
 public:
  /// An undefined tensor (no storage).
  Tensor() = default;

  /// Uninitialised memory on the context's device.
  static Tensor empty(const ContextPtr& context, const Shape& shape, DType dtype,
                      MemoryCategory category = MemoryCategory::Activations);
  /// A contiguous tensor over existing storage, starting at `offset_elements`.
  static Tensor from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype,
                             int64_t offset_elements = 0);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const;
  const ContextPtr& context() const;
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const { return shape_.at(wrap_dim(d)); }
  int64_t stride(int64_t d) const { return strides_.at(wrap_dim(d)); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  /// True when both tensors view the same storage.
  bool shares_storage_with(const Tensor& other) const { return storage_ == other.storage_; }

  /// Address of element 0 of this view.
  void* data_ptr() const;
  template <typename T>
  T* data() const {
    return static_cast<T*>(data_ptr());
  }

  // ---- views ----
  /// Elements [start, end) with `step` along `dim` (negative start/end count from the end).
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  /// Element `index` along `dim`, which is removed.
  Tensor select(int64_t dim, int64_t index) const;
  /// Same elements, new shape; the tensor must be contiguous. One dimension may be -1.
  Tensor reshape(const Shape& shape) const;
  Tensor flatten() const { return reshape({numel()}); }
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  /// Reinterprets the bytes as another dtype of the same size (e.g. U8 <-> E4M3).
  Tensor view_as(DType dtype) const;

  /// For one-element CPU tensors: the value converted to double.
  double item() const;

  /// "Tensor(shape=(2,3), dtype=bf16, device=cuda:0)".
  std::string str() const;

 private:
  int64_t wrap_dim(int64_t d) const;

  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::F32;
};

}  // namespace coat
