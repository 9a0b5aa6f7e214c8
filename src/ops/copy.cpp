// Copies, transfers and casts: validation here, kernels in the backends.
#include "coat/ops/copy.h"

#include <cstring>

#include "coat/backend/cpu/copy.h"
#include "coat/ops/dispatch.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/copy.h"
#include "coat/backend/cuda/transfer.h"
#endif

namespace coat::ops {
namespace {

MemoryCategory category_of(const Tensor& t) { return t.storage()->category(); }

// Contiguous same-dtype byte transfer between two devices (at least one of them CUDA).
void transfer(const Tensor& src, Tensor& dst) {
#ifdef COAT_WITH_CUDA
  if (src.device().is_cuda() && dst.device().is_cpu()) {
    cuda::copy_device_to_host(src, dst);
  } else if (src.device().is_cpu() && dst.device().is_cuda()) {
    cuda::copy_host_to_device(src, dst);
  } else {
    cuda::copy_device_to_device(src, dst);
  }
#else
  throw_no_kernel("copy", src.device().is_cpu() ? dst.device() : src.device());
  (void)dst;
#endif
}

}  // namespace

void copy_(Tensor& dst, const Tensor& src, Fp8Saturation sat) {
  COAT_ARG_CHECK(src.defined() && dst.defined(), "copy", "undefined tensor");
  COAT_ARG_CHECK(src.shape() == dst.shape(), "copy", "destination shape ", shape_str(dst.shape()),
                 " differs from source shape ", shape_str(src.shape()));
  const Device d = dst.device();
  if (src.device() == d) {
    COAT_DISPATCH("copy", d, cpu::copy(src, dst, sat), cuda::copy(src, dst, sat));
    return;
  }
  // Across devices: convert on the source device (fewer bytes to move when narrowing), move contiguous
  // bytes, then scatter into dst's strides if it has any.
  Tensor staged_src = src.dtype() == dst.dtype() ? contiguous(src) : cast(src, dst.dtype(), sat);
  Tensor staged_dst = dst.is_contiguous() ? dst : Tensor::empty(dst.context(), dst.shape(), dst.dtype());
  transfer(staged_src, staged_dst);
  if (!staged_dst.shares_storage_with(dst)) copy_(dst, staged_dst, sat);
}

Tensor contiguous(const Tensor& t) {
  if (t.is_contiguous()) return t;
  return clone(t);
}

Tensor clone(const Tensor& t) {
  Tensor out = Tensor::empty(t.context(), t.shape(), t.dtype(), category_of(t));
  copy_(out, t);
  return out;
}

Tensor to(const Tensor& t, const ContextPtr& context) {
  Tensor out = Tensor::empty(context, t.shape(), t.dtype(), category_of(t));
  copy_(out, t);
  return out;
}

Tensor cast(const Tensor& t, DType dtype, Fp8Saturation sat) {
  Tensor out = Tensor::empty(t.context(), t.shape(), dtype, category_of(t));
  copy_(out, t, sat);
  return out;
}

Tensor from_vector(const ContextPtr& context, const Shape& shape, DType dtype, const std::vector<double>& values) {
  COAT_ARG_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector", values.size(),
                 " values for shape ", shape_str(shape));
  auto host = std::make_shared<CpuContext>();
  Tensor staged = Tensor::empty(host, shape, DType::F64);
  if (!values.empty()) std::memcpy(staged.data_ptr(), values.data(), values.size() * sizeof(double));
  Tensor out = Tensor::empty(context, shape, dtype);
  copy_(out, staged);
  return out;
}

Tensor from_vector(const ContextPtr& context, const Shape& shape, DType dtype, const std::vector<float>& values) {
  return from_vector(context, shape, dtype, std::vector<double>(values.begin(), values.end()));
}

std::vector<double> to_double_vector(const Tensor& t) {
  auto host = std::make_shared<CpuContext>();
  Tensor staged = Tensor::empty(host, t.shape(), DType::F64);
  copy_(staged, t);
  std::vector<double> values(static_cast<size_t>(t.numel()));
  if (!values.empty()) std::memcpy(values.data(), staged.data_ptr(), values.size() * sizeof(double));
  return values;
}

std::vector<uint8_t> to_bytes(const Tensor& t) {
  auto host = std::make_shared<CpuContext>();
  Tensor staged = Tensor::empty(host, t.shape(), t.dtype());
  copy_(staged, t);
  std::vector<uint8_t> bytes(staged.nbytes());
  if (!bytes.empty()) std::memcpy(bytes.data(), staged.data_ptr(), bytes.size());
  return bytes;
}

}  // namespace coat::ops
