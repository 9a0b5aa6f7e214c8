// The FP8 range expansion's tables on one CUDA device (coat/backend/moment_codec.h: per row k = (r + 1) / 16
// the decoded magnitudes T_r[q] and the code bounds U_r[j], relative to the group factor), built by a kernel
// from the same scalar functions the CPU twin evaluates, so both read the same floats. One set per FP8 format,
// built at its first use on the context's stream and kept for the context's life (192 KiB each, Workspace
// category). Owned by CudaContext; plain C++ (the build kernel lives in expand_tables.cu).
#pragma once

#include <cuda_runtime_api.h>

#include "coat/backend/cuda/caching_allocator.h"
#include "coat/backend/moment_codec.h"
#include "coat/core/dtype.h"

namespace coat::cuda {

/// Device addresses of one format's tables: values [kExpandRows][kExpandMagnitudes] floats, pairs
/// [kExpandRows][kExpandMagnitudes] BoundPair.
struct ExpandTableView {
  const float* values = nullptr;
  const moment_codec::BoundPair* pairs = nullptr;
};

class ExpandTables {
 public:
  static constexpr size_t kValueBytes =
      sizeof(float) * moment_codec::kExpandRows * moment_codec::kExpandMagnitudes;
  static constexpr size_t kPairBytes =
      sizeof(moment_codec::BoundPair) * moment_codec::kExpandRows * moment_codec::kExpandMagnitudes;
  static constexpr size_t kBytes = moment_codec::kExpandTableBytes;  // per format
  static_assert(kBytes == kValueBytes + kPairBytes, "the values, then the pairs");

  explicit ExpandTables(CachingAllocator& allocator) : allocator_(allocator) {}
  ~ExpandTables();
  ExpandTables(const ExpandTables&) = delete;
  ExpandTables& operator=(const ExpandTables&) = delete;

  /// The tables of FP8 format fmt (E4M3 or E5M2), queued for building on `stream` at the first call (work
  /// queued later on that stream sees them).
  ExpandTableView get(DType fmt, cudaStream_t stream);

 private:
  CachingAllocator& allocator_;
  void* tables_[2] = {nullptr, nullptr};  // [E4M3, E5M2]
};

}  // namespace coat::cuda
