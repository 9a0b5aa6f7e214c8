// The range expansion's tables on the device: one thread per (row, magnitude), the scalar functions of
// moment_codec.h (the CPU twin computes the same entries with the same functions).
#include "coat/backend/cuda/expand_tables.h"

#include "coat/backend/cuda/check.h"
#include "coat/core/error.h"

namespace coat::cuda {
namespace {

using namespace moment_codec;

template <DType Fmt>
__global__ void build_kernel(float* values, BoundPair* pairs) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= kExpandRows * kExpandMagnitudes) return;
  const int row = i / kExpandMagnitudes;
  const uint32_t q = static_cast<uint32_t>(i % kExpandMagnitudes);
  values[i] = expand_value<Fmt>(row, q);
  pairs[i] = expand_pair<Fmt>(row, q);
}

}  // namespace

ExpandTables::~ExpandTables() {
  for (void*& t : tables_) {
    if (t != nullptr) allocator_.deallocate(t, kBytes, MemoryCategory::Workspace);
    t = nullptr;
  }
}

ExpandTableView ExpandTables::get(DType fmt, cudaStream_t stream) {
  COAT_CHECK(fmt == DType::E4M3 || fmt == DType::E5M2, InvalidArgument,
             "[ExpandTables] FP8 format E4M3 or E5M2 expected, got ", dtype_name(fmt));
  void*& t = tables_[fmt == DType::E5M2 ? 1 : 0];
  if (t == nullptr) {
    void* mem = allocator_.allocate(kBytes, MemoryCategory::Workspace);
    auto* values = static_cast<float*>(mem);
    auto* pairs = reinterpret_cast<BoundPair*>(static_cast<char*>(mem) + kValueBytes);
    constexpr int kThreads = 256;
    constexpr int kBlocks = (kExpandRows * kExpandMagnitudes + kThreads - 1) / kThreads;
    if (fmt == DType::E5M2) {
      build_kernel<DType::E5M2><<<kBlocks, kThreads, 0, stream>>>(values, pairs);
    } else {
      build_kernel<DType::E4M3><<<kBlocks, kThreads, 0, stream>>>(values, pairs);
    }
    const cudaError_t launched = cudaGetLastError();
    if (launched != cudaSuccess) {
      allocator_.deallocate(mem, kBytes, MemoryCategory::Workspace);
      COAT_CUDA_CHECK(launched);
    }
    t = mem;
  }
  return ExpandTableView{static_cast<const float*>(t),
                         reinterpret_cast<const BoundPair*>(static_cast<const char*>(t) + kValueBytes)};
}

}  // namespace coat::cuda
