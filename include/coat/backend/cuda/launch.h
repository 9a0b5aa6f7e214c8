// Launch helpers for the CUDA kernels: the stream of a tensor's context and grid sizing.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

#include "coat/backend/cuda/cuda_context.h"
#include "coat/core/tensor.h"

namespace coat::cuda {

inline CudaContext& context_of(const Tensor& t) { return static_cast<CudaContext&>(*t.context()); }
inline cudaStream_t stream_of(const Tensor& t) { return context_of(t).stream(); }

/// Blocks for a grid-stride loop over n items: enough to fill the device a few times over, no more.
inline unsigned grid_for(const Tensor& t, int64_t n, int threads_per_block) {
  const int64_t wanted = (n + threads_per_block - 1) / threads_per_block;
  const int64_t cap = static_cast<int64_t>(context_of(t).properties().multiprocessor_count) * 16;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(wanted, cap)));
}

}  // namespace coat::cuda
