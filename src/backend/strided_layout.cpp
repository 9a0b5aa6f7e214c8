// Building the kernel-side layout of a tensor view.
#include "coat/backend/strided_layout.h"

namespace coat {

StridedLayout strided_layout_of(const Tensor& t) {
  COAT_ARG_CHECK(t.dim() <= StridedLayout::kMaxDims, "strided_layout", "tensor ", t.str(), " has ", t.dim(),
                 " dimensions; kernels support at most ", StridedLayout::kMaxDims);
  StridedLayout layout;
  layout.dims = static_cast<int>(t.dim());
  for (int d = 0; d < layout.dims; ++d) {
    layout.sizes[d] = t.shape()[d];
    layout.strides[d] = t.strides()[d];
  }
  return layout;
}

}  // namespace coat
