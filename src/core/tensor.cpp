// Tensor handles and views: shape/stride arithmetic only, no kernels.
#include "coat/core/tensor.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "coat/core/float_formats.h"

namespace coat {

std::string shape_str(const Shape& shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out.push_back(',');
    out.append(std::to_string(shape[i]));
  }
  out.push_back(')');
  return out;
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t running = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = running;
    running *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

Tensor Tensor::empty(const ContextPtr& context, const Shape& shape, DType dtype, MemoryCategory category) {
  COAT_ARG_CHECK(context != nullptr, "empty", "no device context given");
  for (int64_t s : shape) COAT_ARG_CHECK(s >= 0, "empty", "negative size in shape ", shape_str(shape));
  size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  Tensor t;
  t.storage_ = std::make_shared<Storage>(context, bytes, category);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype,
                            int64_t offset_elements) {
  COAT_ARG_CHECK(storage != nullptr, "from_storage", "null storage");
  size_t end_bytes = static_cast<size_t>(offset_elements + shape_numel(shape)) * dtype_size(dtype);
  COAT_ARG_CHECK(offset_elements >= 0 && end_bytes <= storage->bytes(), "from_storage", "view of ",
                 shape_str(shape), " ", dtype_name(dtype), " at element offset ", offset_elements,
                 " needs ", end_bytes, " bytes but the storage holds ", storage->bytes());
  Tensor t;
  t.storage_ = std::move(storage);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.offset_ = offset_elements;
  t.dtype_ = dtype;
  return t;
}

Device Tensor::device() const {
  COAT_ARG_CHECK(defined(), "device", "tensor is undefined");
  return storage_->device();
}

const ContextPtr& Tensor::context() const {
  COAT_ARG_CHECK(defined(), "context", "tensor is undefined");
  return storage_->context();
}

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;
  int64_t expected = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

void* Tensor::data_ptr() const {
  if (!defined() || storage_->data() == nullptr) return nullptr;
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

int64_t Tensor::wrap_dim(int64_t d) const {
  int64_t n = dim();
  int64_t wrapped = d < 0 ? d + n : d;
  COAT_ARG_CHECK(wrapped >= 0 && wrapped < n, "dim", "dimension ", d, " out of range for a ", n,
                 "-d tensor of shape ", shape_str(shape_));
  return wrapped;
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d);
  int64_t n = shape_[d];
  COAT_ARG_CHECK(step > 0, "slice", "step must be positive, got ", step);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Tensor t = *this;
  t.offset_ += start * strides_[d];
  t.shape_[d] = (end - start + step - 1) / step;
  t.strides_[d] *= step;
  return t;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d);
  int64_t n = shape_[d];
  int64_t i = index < 0 ? index + n : index;
  COAT_ARG_CHECK(i >= 0 && i < n, "select", "index ", index, " out of range for dimension ", d,
                 " of size ", n);
  Tensor t = *this;
  t.offset_ += i * strides_[d];
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape target = shape;
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < target.size(); ++i) {
    if (target[i] == -1) {
      COAT_ARG_CHECK(infer_at < 0, "reshape", "more than one -1 in ", shape_str(shape));
      infer_at = static_cast<int64_t>(i);
    } else {
      COAT_ARG_CHECK(target[i] >= 0, "reshape", "negative size in ", shape_str(shape));
      known *= target[i];
    }
  }
  if (infer_at >= 0) {
    COAT_ARG_CHECK(known != 0 && numel() % known == 0, "reshape", "cannot infer -1 in ",
                   shape_str(shape), " for ", numel(), " elements");
    target[infer_at] = numel() / known;
  }
  COAT_ARG_CHECK(shape_numel(target) == numel(), "reshape", "shape ", shape_str(shape_), " (", numel(),
                 " elements) cannot become ", shape_str(target));
  COAT_ARG_CHECK(is_contiguous(), "reshape", "tensor of shape ", shape_str(shape_), " with strides ",
                 shape_str(strides_), " is not contiguous; call contiguous() first");
  Tensor t = *this;
  t.shape_ = target;
  t.strides_ = contiguous_strides(target);
  return t;
}

Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
  dim0 = wrap_dim(dim0);
  dim1 = wrap_dim(dim1);
  Tensor t = *this;
  std::swap(t.shape_[dim0], t.shape_[dim1]);
  std::swap(t.strides_[dim0], t.strides_[dim1]);
  return t;
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  COAT_ARG_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute", "got ", dims.size(),
                 " dimensions for a ", dim(), "-d tensor");
  std::vector<bool> seen(dims.size(), false);
  Tensor t = *this;
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i]);
    COAT_ARG_CHECK(!seen[d], "permute", "dimension ", d, " repeated");
    seen[d] = true;
    t.shape_[i] = shape_[d];
    t.strides_[i] = strides_[d];
  }
  return t;
}

Tensor Tensor::view_as(DType dtype) const {
  COAT_ARG_CHECK(dtype_size(dtype) == dtype_size(dtype_), "view_as", "cannot view ", dtype_name(dtype_),
                 " as ", dtype_name(dtype), ": element sizes differ");
  Tensor t = *this;
  t.dtype_ = dtype;
  return t;
}

double Tensor::item() const {
  COAT_ARG_CHECK(numel() == 1, "item", "tensor of shape ", shape_str(shape_), " has ", numel(),
                 " elements, expected 1");
  COAT_ARG_CHECK(device().is_cpu(), "item", "tensor is on ", device().str(), "; copy it to the CPU first");
  const void* p = data_ptr();
  switch (dtype_) {
    case DType::F32: return *static_cast<const float*>(p);
    case DType::F64: return *static_cast<const double*>(p);
    case DType::BF16: return bf16_to_float(*static_cast<const uint16_t*>(p));
    case DType::F16: return f16_to_float(*static_cast<const uint16_t*>(p));
    case DType::E4M3: return e4m3_to_float(*static_cast<const uint8_t*>(p));
    case DType::E5M2: return e5m2_to_float(*static_cast<const uint8_t*>(p));
    case DType::I32: return *static_cast<const int32_t*>(p);
    case DType::I64: return static_cast<double>(*static_cast<const int64_t*>(p));
    case DType::U8: return *static_cast<const uint8_t*>(p);
    case DType::U16: return *static_cast<const uint16_t*>(p);
    case DType::U32: return *static_cast<const uint32_t*>(p);
  }
  return 0.0;
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return detail::concat("Tensor(shape=", shape_str(shape_), ", dtype=", dtype_name(dtype_),
                        ", device=", device().str(), ")");
}

}  // namespace coat
