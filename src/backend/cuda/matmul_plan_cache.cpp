// Building cuBLASLt matmul plans (descriptors + heuristic choice) and caching them by key.
#include "coat/backend/cuda/matmul_plan_cache.h"

#include <functional>
#include <vector>

#include "coat/backend/cuda/check.h"
#include "coat/core/error.h"

namespace coat::cuda {

namespace {

const char* type_name(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_32F:
      return "f32";
    case CUDA_R_64F:
      return "f64";
    case CUDA_R_16BF:
      return "bf16";
    case CUDA_R_16F:
      return "f16";
    case CUDA_R_8F_E4M3:
      return "e4m3";
    case CUDA_R_8F_E5M2:
      return "e5m2";
    default:
      return "other";
  }
}

const char* op_name(cublasOperation_t op) {
  return op == CUBLAS_OP_N ? "N" : op == CUBLAS_OP_T ? "T" : "C";
}

struct PreferenceDeleter {
  void operator()(cublasLtMatmulPreferenceOpaque_t* p) const { (void)cublasLtMatmulPreferenceDestroy(p); }
};

template <typename T>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, T value) {
  COAT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
}

template <typename T>
void set_pref(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, T value) {
  COAT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value)));
}

std::unique_ptr<MatmulPlan> build_plan(cublasLtHandle_t handle, const MatmulPlanKey& key,
                                       size_t max_workspace_bytes, const void* a_scale, const void* b_scale) {
  auto plan = std::make_unique<MatmulPlan>();  // frees whatever was created if a step below throws
  COAT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, key.compute_type, key.scale_type));
  set_desc<int32_t>(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, key.trans_a);
  set_desc<int32_t>(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, key.trans_b);
  if (key.fast_accum) set_desc<int8_t>(plan->desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, 1);
  if (key.a_scale_mode != 0 || key.b_scale_mode != 0) {
#if CUBLAS_VERSION >= 120800
    set_desc<int32_t>(plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, key.a_scale_mode);
    set_desc<int32_t>(plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, key.b_scale_mode);
#else
    throw NotImplemented(::coat::detail::concat("[matmul] scale modes other than one scale per tensor need "
                                                "cuBLAS 12.8 or newer; built with ", CUBLAS_VERSION, ": ",
                                                key.str()));
#endif
  }
  if (a_scale != nullptr) set_desc<const void*>(plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, a_scale);
  if (b_scale != nullptr) set_desc<const void*>(plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, b_scale);

  // Layouts describe the matrices as stored (before the op): op(A) is m x k, so A is k x m when transposed.
  const bool ta = key.trans_a != CUBLAS_OP_N;
  const bool tb = key.trans_b != CUBLAS_OP_N;
  COAT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a_layout, key.a_type, ta ? key.k : key.m,
                                               ta ? key.m : key.k, key.lda));
  COAT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b_layout, key.b_type, tb ? key.n : key.k,
                                               tb ? key.k : key.n, key.ldb));
  COAT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->c_layout, key.c_type, key.m, key.n, key.ldc));

  const std::vector<cublasLtMatmulHeuristicResult_t> found =
      matmul_candidates(handle, *plan, key, max_workspace_bytes, 1);
  if (found.empty()) {
    throw CublasError(::coat::detail::concat("[matmul] cuBLASLt found no algorithm for ", key.str()));
  }
  const cublasLtMatmulHeuristicResult_t& result = found.front();
  plan->algo = result.algo;
  plan->workspace_bytes = result.workspaceSize;
  return plan;
}

}  // namespace

std::vector<cublasLtMatmulHeuristicResult_t> matmul_candidates(cublasLtHandle_t handle, const MatmulPlan& plan,
                                                               const MatmulPlanKey& key,
                                                               size_t max_workspace_bytes, int count) {
  COAT_CHECK(count >= 1, InvalidArgument, "[matmul] candidates: count must be at least 1, got ", count);
  cublasLtMatmulPreference_t raw_pref = nullptr;
  COAT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&raw_pref));
  std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, PreferenceDeleter> pref(raw_pref);
  set_pref<uint64_t>(raw_pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, max_workspace_bytes);
  // Without these the heuristic assumes 256-byte aligned pointers, wrong for views at an offset.
  set_pref<uint32_t>(raw_pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a);
  set_pref<uint32_t>(raw_pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b);
  set_pref<uint32_t>(raw_pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c);
  set_pref<uint32_t>(raw_pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c);

  std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(count));
  int returned = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(handle, plan.desc, plan.a_layout, plan.b_layout, plan.c_layout,
                                     plan.c_layout, raw_pref, count, results.data(), &returned);
  if (status != CUBLAS_STATUS_SUCCESS && status != CUBLAS_STATUS_NOT_SUPPORTED) {
    throw CublasError(::coat::detail::concat("[matmul] cuBLASLt heuristic query failed for ", key.str(), ": ",
                                             cublasLtGetStatusString(status)));
  }
  results.resize(status == CUBLAS_STATUS_SUCCESS ? static_cast<size_t>(returned) : 0);
  std::erase_if(results, [](const cublasLtMatmulHeuristicResult_t& r) { return r.state != CUBLAS_STATUS_SUCCESS; });
  return results;
}

std::string MatmulPlanKey::str() const {
  const std::string scale_modes =
      a_scale_mode != 0 || b_scale_mode != 0
          ? ::coat::detail::concat(" scale_mode=", a_scale_mode, "/", b_scale_mode)
          : std::string();
  return ::coat::detail::concat("m=", m, " n=", n, " k=", k, " opA=", op_name(trans_a),
                                " opB=", op_name(trans_b), " lda=", lda, " ldb=", ldb, " ldc=", ldc,
                                " A=", type_name(a_type), " B=", type_name(b_type), " C=", type_name(c_type),
                                " beta=", beta_zero ? "0" : "nonzero", fast_accum ? " fast_accum" : "", " align=", align_a, "/", align_b, "/",
                                align_c, scale_modes);
}

size_t MatmulPlanKeyHash::operator()(const MatmulPlanKey& key) const {
  size_t h = 0;
  auto mix = [&h](uint64_t v) {
    h ^= std::hash<uint64_t>{}(v) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  };
  mix(key.m);
  mix(key.n);
  mix(key.k);
  mix(static_cast<uint64_t>(key.lda));
  mix(static_cast<uint64_t>(key.ldb));
  mix(static_cast<uint64_t>(key.ldc));
  mix(static_cast<uint64_t>(key.trans_a) | (static_cast<uint64_t>(key.trans_b) << 8) |
      (static_cast<uint64_t>(key.beta_zero) << 16) | (static_cast<uint64_t>(key.fast_accum) << 17));
  mix(static_cast<uint64_t>(key.a_type) | (static_cast<uint64_t>(key.b_type) << 16) |
      (static_cast<uint64_t>(key.c_type) << 32) | (static_cast<uint64_t>(key.scale_type) << 48));
  mix(static_cast<uint64_t>(key.compute_type));
  mix(static_cast<uint64_t>(key.align_a) | (static_cast<uint64_t>(key.align_b) << 16) |
      (static_cast<uint64_t>(key.align_c) << 32));
  mix(static_cast<uint64_t>(static_cast<uint32_t>(key.a_scale_mode)) |
      (static_cast<uint64_t>(static_cast<uint32_t>(key.b_scale_mode)) << 32));
  return h;
}

MatmulPlan::~MatmulPlan() {
  if (c_layout != nullptr) (void)cublasLtMatrixLayoutDestroy(c_layout);
  if (b_layout != nullptr) (void)cublasLtMatrixLayoutDestroy(b_layout);
  if (a_layout != nullptr) (void)cublasLtMatrixLayoutDestroy(a_layout);
  if (desc != nullptr) (void)cublasLtMatmulDescDestroy(desc);
}

const MatmulPlan& MatmulPlanCache::get(cublasLtHandle_t handle, const MatmulPlanKey& key,
                                       size_t max_workspace_bytes, const void* a_scale, const void* b_scale) {
  std::lock_guard lock(mutex_);
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  auto plan = build_plan(handle, key, max_workspace_bytes, a_scale, b_scale);
  ++plans_built_;
  // unique_ptr: the plan's address stays valid when the map rehashes.
  return *plans_.emplace(key, std::move(plan)).first->second;
}

uint64_t MatmulPlanCache::plans_built() const {
  std::lock_guard lock(mutex_);
  return plans_built_;
}

size_t MatmulPlanCache::size() const {
  std::lock_guard lock(mutex_);
  return plans_.size();
}

void MatmulPlanCache::clear() {
  std::lock_guard lock(mutex_);
  plans_.clear();
}

}  // namespace coat::cuda
