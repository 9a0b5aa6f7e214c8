// Context creation, the one place that knows which backends this build has.
#include "coat/ops/runtime.h"

#include "coat/core/error.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/device_properties.h"
#include "coat/backend/cuda/pinned_host.h"
#endif

namespace coat::ops {

int cuda_device_count() {
#ifdef COAT_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

size_t cuda_device_memory_bytes(int index) {
#ifdef COAT_WITH_CUDA
  if (index < 0 || index >= cuda::device_count()) return 0;
  try {
    return cuda::DeviceProperties::query(index).total_memory_bytes;
  } catch (const Error&) {
    return 0;
  }
#else
  (void)index;
  return 0;
#endif
}

ContextPtr make_context(Device device) {
  if (device.is_cpu()) return std::make_shared<CpuContext>();
#ifdef COAT_WITH_CUDA
  const int count = cuda::device_count();
  COAT_ARG_CHECK(device.index >= 0 && device.index < count, "make_context", "device ", device.str(),
                 " does not exist: ", count, " CUDA device(s) visible");
  return std::make_shared<cuda::CudaContext>(device.index);
#else
  throw NotImplemented(detail::concat("[make_context] device ", device.str(),
                                      " requested but this build has no CUDA backend (configure with "
                                      "-DCOAT_CUDA=ON on a machine with the CUDA toolkit)"));
#endif
}

ContextPtr host_staging_context(const ContextPtr& context) {
  COAT_ARG_CHECK(context != nullptr, "host_staging_context", "no context");
  if (context->device().is_cpu()) return context;
#ifdef COAT_WITH_CUDA
  return std::make_shared<cuda::PinnedHostContext>();
#else
  throw NotImplemented(detail::concat("[host_staging_context] device ", context->device().str(),
                                      " but this build has no CUDA backend"));
#endif
}

}  // namespace coat::ops
