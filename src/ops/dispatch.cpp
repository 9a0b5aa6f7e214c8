// The error raised when an op has no kernel for a device.
#include "coat/ops/dispatch.h"

namespace coat::ops {

void throw_no_kernel(std::string_view op, Device device) {
  throw NotImplemented(detail::concat("[", op, "] no kernel for device ", device.str(),
                                      ": this build has no CUDA backend (configure with -DCOAT_CUDA=ON)"));
}

}  // namespace coat::ops
