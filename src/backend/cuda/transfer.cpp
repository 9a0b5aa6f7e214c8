// Host <-> device copies. Host memory here is pageable, so each copy waits for completion before
// returning: the caller's host buffer must not be read or freed while a DMA engine still uses it.
#include "coat/backend/cuda/transfer.h"

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/launch.h"

namespace coat::cuda {

void copy_device_to_host(const Tensor& src, Tensor& dst) {
  if (src.nbytes() == 0) return;
  cudaStream_t stream = stream_of(src);
  COAT_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), src.nbytes(), cudaMemcpyDeviceToHost, stream));
  COAT_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void copy_host_to_device(const Tensor& src, Tensor& dst) {
  if (src.nbytes() == 0) return;
  cudaStream_t stream = stream_of(dst);
  COAT_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), src.nbytes(), cudaMemcpyHostToDevice, stream));
  COAT_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void copy_device_to_device(const Tensor& src, Tensor& dst) {
  if (src.nbytes() == 0) return;
  CudaContext& from = context_of(src);
  CudaContext& to = context_of(dst);
  if (&from != &to) from.synchronize();  // the source's producers may run on the other context's stream
  COAT_CUDA_CHECK(cudaMemcpyPeerAsync(dst.data_ptr(), dst.device().index, src.data_ptr(), src.device().index,
                                      src.nbytes(), to.stream()));
}

}  // namespace coat::cuda
