// Cached cuBLASLt matmul plans: the descriptors (operation, three matrix layouts) and the algorithm the
// heuristic picked, built once per problem key and reused by every later call with the same key.
// One cache per CudaContext (it belongs to that context's cuBLASLt handle and workspace size).
#pragma once

#include <cublasLt.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace coat::cuda {

/// A problem in cuBLASLt's (column-major) terms: D[m,n] = alpha * op(A)[m,k] op(B)[k,n] + beta * C, with
/// D stored like C. Everything that changes the descriptors or the heuristic's choice is in the key.
struct MatmulPlanKey {
  uint64_t m = 0;
  uint64_t n = 0;
  uint64_t k = 0;
  int64_t lda = 0;
  int64_t ldb = 0;
  int64_t ldc = 0;
  cublasOperation_t trans_a = CUBLAS_OP_N;
  cublasOperation_t trans_b = CUBLAS_OP_N;
  cudaDataType_t a_type = CUDA_R_32F;
  cudaDataType_t b_type = CUDA_R_32F;
  cudaDataType_t c_type = CUDA_R_32F;  // also D's type
  cublasComputeType_t compute_type = CUBLAS_COMPUTE_32F;
  cudaDataType_t scale_type = CUDA_R_32F;  // type of alpha and beta
  bool beta_zero = true;
  /// CUBLASLT_MATMUL_DESC_FAST_ACCUM (FP8 only): part of the key since it may change the algorithm chosen.
  bool fast_accum = false;
  /// CUBLASLT_MATMUL_DESC_A_SCALE_MODE / B_SCALE_MODE, cublasLtMatmulMatrixScale_t values: 0 (the default,
  /// CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F) is one scale per tensor; block-scaled FP8 GEMMs set e.g.
  /// VEC128_32F / BLK128x128_32F. Part of the key since they change the kernels that qualify.
  int32_t a_scale_mode = 0;
  int32_t b_scale_mode = 0;
  /// Guaranteed alignment of the A, B, C/D addresses in bytes (a power of two <= 256): the heuristic may
  /// only pick kernels that need no more than this.
  uint32_t align_a = 256;
  uint32_t align_b = 256;
  uint32_t align_c = 256;

  bool operator==(const MatmulPlanKey&) const = default;
  /// "m=64 n=32 k=16 opA=N opB=T lda=64 ldb=32 ldc=64 A=bf16 B=bf16 C=f32 beta=0 align=256/256/256".
  std::string str() const;
};

struct MatmulPlanKeyHash {
  size_t operator()(const MatmulPlanKey& key) const;
};

/// Owns its descriptors (destroyed with it).
struct MatmulPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a_layout = nullptr;
  cublasLtMatrixLayout_t b_layout = nullptr;
  cublasLtMatrixLayout_t c_layout = nullptr;  // also D's layout
  cublasLtMatmulAlgo_t algo{};
  size_t workspace_bytes = 0;  // what the chosen algorithm needs (<= the context's workspace)

  MatmulPlan() = default;
  ~MatmulPlan();
  MatmulPlan(const MatmulPlan&) = delete;
  MatmulPlan& operator=(const MatmulPlan&) = delete;
};

/// Up to `count` algorithms cuBLASLt's heuristic offers for `plan` (its descriptor and layouts, built for
/// `key`), best first by its own estimate, with the key's alignments and at most `max_workspace_bytes` of
/// workspace; empty when none fits. The plan cache takes the first; a benchmark may time the others.
std::vector<cublasLtMatmulHeuristicResult_t> matmul_candidates(cublasLtHandle_t handle, const MatmulPlan& plan,
                                                               const MatmulPlanKey& key,
                                                               size_t max_workspace_bytes, int count);

class MatmulPlanCache {
 public:
  /// The plan for `key`, built on first use with `handle`, allowing up to `max_workspace_bytes` of
  /// workspace. Throws CublasError when cuBLASLt has no algorithm for the problem.
  /// a_scale / b_scale, when given, are set as A_SCALE_POINTER / B_SCALE_POINTER before the heuristic query
  /// of a plan being built (cuBLASLt refuses the query for block scale modes without them); a cached plan's
  /// descriptor keeps whatever pointers it was last given, so callers set their own on every call.
  const MatmulPlan& get(cublasLtHandle_t handle, const MatmulPlanKey& key, size_t max_workspace_bytes,
                        const void* a_scale = nullptr, const void* b_scale = nullptr);
  /// How many plans were built so far (a repeated call with a known key builds none).
  uint64_t plans_built() const;
  size_t size() const;
  void clear();

 private:
  mutable std::mutex mutex_;
  std::unordered_map<MatmulPlanKey, std::unique_ptr<MatmulPlan>, MatmulPlanKeyHash> plans_;
  uint64_t plans_built_ = 0;
};

}  // namespace coat::cuda
