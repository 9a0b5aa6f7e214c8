// cuda attention on cuDNN's fused scaled-dot-product attention, through cudnn-frontend (header-only; found
// at build time, see CMakeLists.txt). Our tensors are [B, T, H, Dh], token-strided (contiguous, or views of a
// packed projection: coat/backend/token_strided.h); cuDNN's SDPA takes [B, H, T, Dh] dims, so each tensor is
// described with those dims and the strides of our layout (b: T*ts, h: Dh, t: ts, d: 1 with ts the token
// stride, H*Dh when contiguous): no transposes, no copies. The softmax stats are [B, H, T, 1] f32 with
// strides (H*T, T, 1, 1): exactly our lse [B, Hq, T]. cuDNN's stats are max + ln(sum exp(s - max)) of the
// scaled scores s = scale * q.k, the natural-log LSE the CPU backend writes (not the base-2 variant).
//
// Causal mask: top-left diagonal when Tq == Tk; bottom-right (query t sees keys 0..Tk - Tq + t) when the
// keys are longer. Grouped KV heads: k, v, dk and dv simply have Hkv heads; cuDNN maps query head h to kv
// head h / (Hq / Hkv) and sums dk, dv over each group.
#include "coat/backend/cuda/attention.h"

#include "coat/backend/token_strided.h"
#include "coat/core/error.h"

#ifdef COAT_HAVE_CUDNN_FRONTEND

#include <cuda_runtime_api.h>
#include <nvrtc.h>

// cudnn-frontend's experimental Blackwell RMSNorm+SiLU engine compiles kernels with NVRTC, and its calls come
// with every inclusion of cudnn_frontend.h. The attention graphs here never reach that engine, so the NVRTC
// functions are weak references: libcoat needs no libnvrtc (the GPU hosts' library set may lack it), and
// executables linking libcoat need not name it either.
#pragma weak nvrtcCreateProgram
#pragma weak nvrtcDestroyProgram
#pragma weak nvrtcCompileProgram
#pragma weak nvrtcGetProgramLogSize
#pragma weak nvrtcGetProgramLog
#pragma weak nvrtcGetCUBINSize
#pragma weak nvrtcGetCUBIN

#include <cudnn_frontend.h>

#include <bit>
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/sdpa_plan_cache.h"

namespace coat::cuda {

namespace {

namespace fe = cudnn_frontend;

// Tensor ids in the graphs' variant packs.
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

struct FrontendPlan final : SdpaPlan {
  std::shared_ptr<fe::graph::Graph> graph;
  int64_t workspace_bytes = 0;
};

const char* code_name(fe::error_code_t code) {
  switch (code) {
    case fe::error_code_t::OK:
      return "OK";
    case fe::error_code_t::ATTRIBUTE_NOT_SET:
      return "ATTRIBUTE_NOT_SET";
    case fe::error_code_t::SHAPE_DEDUCTION_FAILED:
      return "SHAPE_DEDUCTION_FAILED";
    case fe::error_code_t::INVALID_TENSOR_NAME:
      return "INVALID_TENSOR_NAME";
    case fe::error_code_t::INVALID_VARIANT_PACK:
      return "INVALID_VARIANT_PACK";
    case fe::error_code_t::GRAPH_NOT_SUPPORTED:
      return "GRAPH_NOT_SUPPORTED";
    case fe::error_code_t::GRAPH_EXECUTION_PLAN_CREATION_FAILED:
      return "GRAPH_EXECUTION_PLAN_CREATION_FAILED";
    case fe::error_code_t::GRAPH_EXECUTION_FAILED:
      return "GRAPH_EXECUTION_FAILED";
    case fe::error_code_t::HEURISTIC_QUERY_FAILED:
      return "HEURISTIC_QUERY_FAILED";
    case fe::error_code_t::UNSUPPORTED_GRAPH_FORMAT:
      return "UNSUPPORTED_GRAPH_FORMAT";
    case fe::error_code_t::CUDA_API_FAILED:
      return "CUDA_API_FAILED";
    case fe::error_code_t::CUDNN_BACKEND_API_FAILED:
      return "CUDNN_BACKEND_API_FAILED";
    case fe::error_code_t::INVALID_CUDA_DEVICE:
      return "INVALID_CUDA_DEVICE";
    case fe::error_code_t::HANDLE_ERROR:
      return "HANDLE_ERROR";
    case fe::error_code_t::INVALID_VALUE:
      return "INVALID_VALUE";
    default:
      return "error";
  }
}

/// Throws for a failed frontend call: NotImplemented when cuDNN does not support the problem (e.g. a head
/// dimension it has no kernel for), CudnnError otherwise.
void check_fe(fe::error_t status, const char* step, const SdpaKey& key) {
  if (status.is_good()) return;
  const std::string what = ::coat::detail::concat("[attention] cuDNN ", step, " failed for ", key.str(), ": ",
                                                  code_name(status.get_code()), ": ", status.get_message());
  if (status.get_code() == fe::error_code_t::GRAPH_NOT_SUPPORTED) {
    throw NotImplemented(what +
                         "\nHINT: cuDNN's fused attention on Hopper needs bf16 and a head dimension "
                         "that is a multiple of 8, at most 256; its backward needs more than one key");
  }
  throw CudnnError(what);
}

std::vector<int64_t> bhsd_dims(int64_t b, int64_t t, int64_t h, int64_t dh) {
  return {b, h, t, dh};
}
/// Strides of our token-strided [B, T, H, Dh] layout (token stride ts), listed in cuDNN's (b, h, t, d) order.
std::vector<int64_t> bshd_strides(int64_t t, int64_t dh, int64_t ts) {
  return {t * ts, dh, ts, 1};
}

std::shared_ptr<fe::graph::Tensor_attributes> io_tensor(fe::graph::Graph& graph, const char* name, Uid uid,
                                                        int64_t b, int64_t t, int64_t h, int64_t dh,
                                                        int64_t ts) {
  return graph.tensor(fe::graph::Tensor_attributes()
                          .set_name(name)
                          .set_uid(uid)
                          .set_dim(bhsd_dims(b, t, h, dh))
                          .set_stride(bshd_strides(t, dh, ts)));
}

void set_io(const std::shared_ptr<fe::graph::Tensor_attributes>& t, Uid uid, int64_t b, int64_t s, int64_t h,
            int64_t dh, int64_t ts) {
  t->set_output(true).set_uid(uid).set_dim(bhsd_dims(b, s, h, dh)).set_stride(bshd_strides(s, dh, ts));
}

std::shared_ptr<fe::graph::Graph> new_graph() {
  auto graph = std::make_shared<fe::graph::Graph>();
  graph->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  return graph;
}

template <typename Attributes>
void set_causal(Attributes& attributes, const SdpaKey& key) {
  attributes.set_diagonal_alignment(key.tq == key.tk ? fe::DiagonalAlignment_t::TOP_LEFT
                                                     : fe::DiagonalAlignment_t::BOTTOM_RIGHT);
  attributes.set_diagonal_band_right_bound(0);
}

/// validate, lower to cuDNN's backend graph, pick the heuristic's engine, build it.
std::unique_ptr<SdpaPlan> finish(std::shared_ptr<fe::graph::Graph> graph, cudnnHandle_t handle,
                                 const SdpaKey& key) {
  try {
    check_fe(graph->validate(), "graph validation", key);
    check_fe(graph->build_operation_graph(handle), "operation graph", key);
    check_fe(graph->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK}), "heuristics", key);
    check_fe(graph->check_support(handle), "support check", key);
    check_fe(graph->build_plans(handle), "plan build", key);
    auto plan = std::make_unique<FrontendPlan>();
    check_fe(graph->get_workspace_size(plan->workspace_bytes), "workspace query", key);
    plan->graph = std::move(graph);
    return plan;
  } catch (const fe::cudnnException& e) {
    throw CudnnError(
        ::coat::detail::concat("[attention] cuDNN graph build failed for ", key.str(), ": ", e.what()));
  }
}

std::unique_ptr<SdpaPlan> build_forward(cudnnHandle_t handle, const SdpaKey& key) {
  auto graph = new_graph();
  auto q = io_tensor(*graph, "Q", kQ, key.b, key.tq, key.hq, key.dh, key.q_ts);
  auto k = io_tensor(*graph, "K", kK, key.b, key.tk, key.hkv, key.dh, key.k_ts);
  auto v = io_tensor(*graph, "V", kV, key.b, key.tk, key.hkv, key.dh, key.v_ts);
  auto attributes = fe::graph::SDPA_attributes()
                        .set_name("coat_sdpa_fwd")
                        .set_generate_stats(true)
                        .set_attn_scale(std::bit_cast<float>(key.scale_bits));
  set_causal(attributes, key);
  auto [o, stats] = graph->sdpa(q, k, v, attributes);
  set_io(o, kO, key.b, key.tq, key.hq, key.dh, key.o_ts);
  stats->set_output(true)
      .set_uid(kStats)
      .set_data_type(fe::DataType_t::FLOAT)
      .set_dim({key.b, key.hq, key.tq, 1})
      .set_stride({key.hq * key.tq, key.tq, 1, 1});
  return finish(std::move(graph), handle, key);
}

std::unique_ptr<SdpaPlan> build_backward(cudnnHandle_t handle, const SdpaKey& key) {
  auto graph = new_graph();
  auto q = io_tensor(*graph, "Q", kQ, key.b, key.tq, key.hq, key.dh, key.q_ts);
  auto k = io_tensor(*graph, "K", kK, key.b, key.tk, key.hkv, key.dh, key.k_ts);
  auto v = io_tensor(*graph, "V", kV, key.b, key.tk, key.hkv, key.dh, key.v_ts);
  auto o = io_tensor(*graph, "O", kO, key.b, key.tq, key.hq, key.dh, key.o_ts);
  auto d_o = io_tensor(*graph, "dO", kDO, key.b, key.tq, key.hq, key.dh, key.do_ts);
  auto stats = graph->tensor(fe::graph::Tensor_attributes()
                                 .set_name("Stats")
                                 .set_uid(kStats)
                                 .set_data_type(fe::DataType_t::FLOAT)
                                 .set_dim({key.b, key.hq, key.tq, 1})
                                 .set_stride({key.hq * key.tq, key.tq, 1, 1}));
  auto attributes = fe::graph::SDPA_backward_attributes()
                        .set_name("coat_sdpa_bwd")
                        .set_attn_scale(std::bit_cast<float>(key.scale_bits))
                        .set_deterministic_algorithm(key.deterministic);
  set_causal(attributes, key);
  auto [dq, dk, dv] = graph->sdpa_backward(q, k, v, o, d_o, stats, attributes);
  set_io(dq, kDQ, key.b, key.tq, key.hq, key.dh, key.dq_ts);
  set_io(dk, kDK, key.b, key.tk, key.hkv, key.dh, key.dk_ts);
  set_io(dv, kDV, key.b, key.tk, key.hkv, key.dh, key.dv_ts);
  return finish(std::move(graph), handle, key);
}

/// Checks dtype, layout and alignment; returns the token stride.
int64_t check_bf16_aligned(const Tensor& t, const char* op, const char* name) {
  COAT_CHECK(
      t.dtype() == DType::BF16, NotImplemented, "[", op, "] cuda: ", name, " has dtype ",
      dtype_name(t.dtype()),
      "; the CUDA attention (cuDNN flash attention) supports bf16 only\nHINT: cast q, k and v to bf16");
  const int64_t ts = token_stride_of(t);
  COAT_ARG_CHECK(t.numel() == 0 || ts >= 0, op, name, " ", shape_str(t.shape()), " with strides ",
                 shape_str(t.strides()),
                 " is not token-strided (element stride 1, head stride Dh, batch stride T * token stride)");
  COAT_ARG_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, op, name,
                 " must be 16-byte aligned for cuDNN (a view at an odd offset?)");
  return ts;
}

SdpaKey make_key(const Tensor& q, const Tensor& k, double scale, bool backward, bool deterministic) {
  SdpaKey key;
  key.backward = backward;
  key.b = q.size(0);
  key.tq = q.size(1);
  key.hq = q.size(2);
  key.dh = q.size(3);
  key.tk = k.size(1);
  key.hkv = k.size(2);
  key.scale_bits = std::bit_cast<uint32_t>(static_cast<float>(scale));
  key.deterministic = backward && deterministic;
  return key;
}

/// Runs a plan with workspace from the caching allocator. The workspace block goes back to the cache right
/// after the launch: its next user is later work on the same stream (see caching_allocator.h).
void run(CudaContext& ctx, cudnnHandle_t handle, SdpaPlan& base, std::unordered_map<int64_t, void*>& pack,
         const SdpaKey& key) {
  auto& plan = static_cast<FrontendPlan&>(base);
  const auto bytes = static_cast<size_t>(plan.workspace_bytes);
  void* workspace = bytes > 0 ? ctx.caching_allocator().allocate(bytes, MemoryCategory::Workspace) : nullptr;
  struct Release {
    CudaContext& ctx;
    void* ptr;
    size_t bytes;
    ~Release() {
      if (ptr != nullptr) ctx.caching_allocator().deallocate(ptr, bytes, MemoryCategory::Workspace);
    }
  } release{ctx, workspace, bytes};
  try {
    check_fe(plan.graph->execute(handle, pack, workspace), "execution", key);
  } catch (const fe::cudnnException& e) {
    throw CudnnError(
        ::coat::detail::concat("[attention] cuDNN execution failed for ", key.str(), ": ", e.what()));
  }
}

void* ptr(const Tensor& t) {
  return t.data_ptr();
}

}  // namespace

bool attention_available() {
  return true;
}

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, Tensor& out,
                       Tensor& lse) {
  constexpr const char* kOp = "attention_forward";
  SdpaKey key = make_key(q, k, scale, false, false);
  for (auto [t, name, ts] : {std::tuple{&q, "q", &key.q_ts},
                             {&k, "k", &key.k_ts},
                             {&v, "v", &key.v_ts},
                             {&out, "out", &key.o_ts}}) {
    *ts = check_bf16_aligned(*t, kOp, name);
  }
  COAT_ARG_CHECK(lse.dtype() == DType::F32 && lse.is_contiguous(), kOp, "lse must be contiguous f32");
  if (q.numel() == 0) return;  // nothing to compute (as on the CPU)
  auto& ctx = static_cast<CudaContext&>(*q.context());
  cudnnHandle_t handle = ctx.cudnn();
  SdpaPlan& plan = ctx.sdpa_plans().get(key, [&] { return build_forward(handle, key); });
  std::unordered_map<int64_t, void*> pack{
      {kQ, ptr(q)}, {kK, ptr(k)}, {kV, ptr(v)}, {kO, ptr(out)}, {kStats, ptr(lse)}};
  run(ctx, handle, plan, pack, key);
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, double scale, Tensor& dq, Tensor& dk,
                        Tensor& dv, bool deterministic) {
  constexpr const char* kOp = "attention_backward";
  SdpaKey key = make_key(q, k, scale, true, deterministic);
  for (auto [t, name, ts] : {std::tuple{&dout, "dout", &key.do_ts},
                             {&q, "q", &key.q_ts},
                             {&k, "k", &key.k_ts},
                             {&v, "v", &key.v_ts},
                             {&out, "out", &key.o_ts},
                             {&dq, "dq", &key.dq_ts},
                             {&dk, "dk", &key.dk_ts},
                             {&dv, "dv", &key.dv_ts}}) {
    *ts = check_bf16_aligned(*t, kOp, name);
  }
  COAT_ARG_CHECK(lse.dtype() == DType::F32 && lse.is_contiguous(), kOp, "lse must be contiguous f32");
  auto& ctx = static_cast<CudaContext&>(*q.context());
  if (k.numel() == 0) return;
  if (q.numel() == 0) {  // no queries: nothing flows back to the keys
    for (auto [t, ts] : {std::pair{&dk, key.dk_ts}, {&dv, key.dv_ts}}) {
      // Rows of H * Dh elements, one per (batch, position), ts elements apart.
      const size_t elem = dtype_size(t->dtype());
      COAT_CUDA_CHECK(cudaMemset2DAsync(t->data_ptr(), static_cast<size_t>(ts) * elem, 0,
                                        static_cast<size_t>(t->size(2) * t->size(3)) * elem,
                                        static_cast<size_t>(t->size(0) * t->size(1)), ctx.stream()));
    }
    return;
  }
  // cuDNN 9.19 refuses this case ("s_q = s_kv = 1 is not supported"); say so before building a graph.
  COAT_CHECK(k.size(1) > 1, NotImplemented, "[", kOp, "] cuda: cuDNN's fused attention backward does not ",
             "support a single key position (q ", shape_str(q.shape()), ", k ", shape_str(k.shape()),
             ")\nHINT: use sequences of at least 2 positions, or the cpu device");
  cudnnHandle_t handle = ctx.cudnn();
  SdpaPlan& plan = ctx.sdpa_plans().get(key, [&] { return build_backward(handle, key); });
  std::unordered_map<int64_t, void*> pack{{kQ, ptr(q)},   {kK, ptr(k)},     {kV, ptr(v)},
                                          {kO, ptr(out)}, {kDO, ptr(dout)}, {kStats, ptr(lse)},
                                          {kDQ, ptr(dq)}, {kDK, ptr(dk)},   {kDV, ptr(dv)}};
  run(ctx, handle, plan, pack, key);
}

}  // namespace coat::cuda

#else  // built without the cudnn-frontend headers

namespace coat::cuda {

namespace {
[[noreturn]] void throw_unavailable(const char* op) {
  throw NotImplemented(::coat::detail::concat(
      "[", op,
      "] cuda: cudnn-frontend headers not found at build time; run scripts/setup.sh (it pip-installs "
      "nvidia-cudnn-frontend) and rebuild"));
}
}  // namespace

bool attention_available() {
  return false;
}

void attention_forward(const Tensor&, const Tensor&, const Tensor&, double, Tensor&, Tensor&) {
  throw_unavailable("attention_forward");
}

void attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                        const Tensor&, double, Tensor&, Tensor&, Tensor&, bool) {
  throw_unavailable("attention_backward");
}

}  // namespace coat::cuda

#endif  // COAT_HAVE_CUDNN_FRONTEND
