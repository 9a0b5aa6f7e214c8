// CUDA kernels of the compressed optimizer moments, the general path: any group sizes, several launches over
// a workspace of the groups. The AdamW step of moments the fused step does not take, quantize and dequantize.
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/launch.h"
#include "quantized_adamw_internal.cuh"

namespace coat::cuda::qadamw {
namespace {

constexpr int kGenThreads = 256;  // the general path's element and group kernels

// ---- the general path: any group sizes, several launches over a workspace of the groups ----

/// A moment with runtime codec and its per-group workspace (grouped codecs only).
struct GenMoment {
  Codec codec = Codec::F32;
  void* codes = nullptr;
  float* scale = nullptr;
  float* expo = nullptr;
  float* center = nullptr;
  int64_t group_size = 1;
  int64_t groups = 0;
  float* decoders = nullptr;  // [groups][3] of the stored metadata
  float* encoders = nullptr;  // [groups][3] of the new metadata
  uint32_t* stats = nullptr;  // [groups][2] max key, masked min key
  float* new_meta = nullptr;  // [groups][3] scale, expo, center (committed last)
  ExpandTableView tables;     // the expansion's tables of the FP8 format
};

template <typename F>
__device__ __forceinline__ void with_codec(Codec c, F&& f) {
  switch (c) {
    case Codec::F32:
      f(std::integral_constant<Codec, Codec::F32>{});
      return;
    case Codec::BF16:
      f(std::integral_constant<Codec, Codec::BF16>{});
      return;
    case Codec::Fp8E4M3:
      f(std::integral_constant<Codec, Codec::Fp8E4M3>{});
      return;
    case Codec::Fp8E5M2:
      f(std::integral_constant<Codec, Codec::Fp8E5M2>{});
      return;
    case Codec::ExpandE4M3:
      f(std::integral_constant<Codec, Codec::ExpandE4M3>{});
      return;
    case Codec::ExpandE5M2:
      f(std::integral_constant<Codec, Codec::ExpandE5M2>{});
      return;
  }
}

__device__ __forceinline__ float gen_decode(const GenMoment& m, int64_t i) {
  float out = 0.0f;
  with_codec(m.codec, [&](auto tag) {
    constexpr Codec C = decltype(tag)::value;
    const code_t<C> code = static_cast<const code_t<C>*>(m.codes)[i];
    if constexpr (!is_grouped(C)) {
      out = load_plain<C>(code);
    } else {
      const float* d = m.decoders + 3 * (i / m.group_size);
      const GroupCoder c{d[0], d[1], d[2]};
      out = decode_code<C>(code, c, m.tables.values, is_expand(C) ? table_offset(c.k) : 0u);
    }
  });
  return out;
}

__device__ __forceinline__ void gen_encode(const GenMoment& m, int64_t i, float x) {
  with_codec(m.codec, [&](auto tag) {
    constexpr Codec C = decltype(tag)::value;
    code_t<C>* codes = static_cast<code_t<C>*>(m.codes);
    if constexpr (!is_grouped(C)) {
      codes[i] = store_plain<C>(x);
    } else {
      const float* e = m.encoders + 3 * (i / m.group_size);
      const GroupCoder c{e[0], e[1], e[2]};
      if constexpr (is_expand(C)) {
        codes[i] = encode_expand<fp8_format(C)>(x, c, ExpandRow{nullptr, m.tables.pairs + table_offset(c.k)});
      } else {
        codes[i] = encode_plain<fp8_format(C)>(x, c.a);
      }
    }
  });
}

__device__ __forceinline__ bool gen_in_decay(const DecayArgs& d, int64_t i) {
  if (d.all) return true;
  if (d.count == 0) return false;
  const bool inl = d.count <= kInlineDecayRanges;
  const int64_t* b = inl ? d.inline_begin : d.begin;
  const int64_t* e = inl ? d.inline_end : d.end;
  const int r = first_ending_after(e, 0, d.count, i);
  return r < d.count && b[r] <= i;
}

/// Merges one value per lane into stats[group] (global atomics; one pair per warp when the warp's lanes
/// share a group). Every lane of the warp calls it; `active` lanes contribute.
__device__ __forceinline__ void gen_add_stats(uint32_t* stats, int64_t group, float x, bool active) {
  const uint32_t key = active ? fp8math::amax_key(x) : 0u;
  const uint32_t mkey = active ? masked_min_key(key) : 0xFFFFFFFFu;
  const int64_t g0 = __shfl_sync(kFullMask, group, 0);
  if (__all_sync(kFullMask, !active || group == g0)) {
    const uint32_t mx = __reduce_max_sync(kFullMask, key), mn = __reduce_min_sync(kFullMask, mkey);
    if ((threadIdx.x & 31) == 0) {
      atomicMax(stats + 2 * g0, mx);
      atomicMin(stats + 2 * g0 + 1, mn);
    }
  } else if (active) {
    atomicMax(stats + 2 * group, key);
    atomicMin(stats + 2 * group + 1, mkey);
  }
}

/// Per group: empty statistics, and (when `decoders`) the decoders of the stored metadata.
__global__ void gen_prepare_kernel(GenMoment m, bool decoders) {
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < m.groups;
       g += int64_t(gridDim.x) * blockDim.x) {
    m.stats[2 * g] = 0u;
    m.stats[2 * g + 1] = 0xFFFFFFFFu;
    if (!decoders) continue;
    with_codec(m.codec, [&](auto tag) {
      constexpr Codec C = decltype(tag)::value;
      if constexpr (is_grouped(C)) {
        const GroupCoder c = group_coder<C>(load_meta<C>(m.scale, m.expo, m.center, g));
        m.decoders[3 * g] = c.a;
        m.decoders[3 * g + 1] = c.f;
        m.decoders[3 * g + 2] = c.k;
      }
    });
  }
}

/// Per group: the new metadata from the statistics (into the moment when `direct`, else into new_meta) and
/// its encoders.
__global__ void gen_params_kernel(GenMoment m, bool direct) {
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < m.groups;
       g += int64_t(gridDim.x) * blockDim.x) {
    with_codec(m.codec, [&](auto tag) {
      constexpr Codec C = decltype(tag)::value;
      if constexpr (is_grouped(C)) {
        GroupStats st;
        st.max_key = m.stats[2 * g];
        st.min_key = m.stats[2 * g + 1];
        GroupMeta meta;
        const GroupCoder c = group_meta_coder<C>(st, meta);
        if (direct) {
          store_meta<C>(m.scale, m.expo, m.center, g, meta);
        } else {
          m.new_meta[3 * g] = meta.scale;
          m.new_meta[3 * g + 1] = meta.expo;
          m.new_meta[3 * g + 2] = meta.center;
        }
        m.encoders[3 * g] = c.a;
        m.encoders[3 * g + 1] = c.f;
        m.encoders[3 * g + 2] = c.k;
      }
    });
  }
}

__global__ void gen_commit_kernel(GenMoment m, const int32_t* skip) {
  if (skip != nullptr && *skip != 0) return;
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < m.groups;
       g += int64_t(gridDim.x) * blockDim.x) {
    GroupMeta meta;
    meta.scale = m.new_meta[3 * g];
    meta.expo = m.new_meta[3 * g + 1];
    meta.center = m.new_meta[3 * g + 2];
    m.scale[g] = meta.scale;
    if (is_expand(m.codec)) {
      m.expo[g] = meta.expo;
      m.center[g] = meta.center;
    }
  }
}

/// The element loop of the general step: warps walk [0, n) together (for the warp-level statistics).
/// write == false: statistics of the new moments only; write == true: param, codes and the optional BF16
/// compute copy written. A set skip flag: nothing (uniform early-out).
__global__ __launch_bounds__(kGenThreads) void gen_step_kernel(float* param, const float* grad, int64_t n,
                                                               GenMoment m, GenMoment v, AdamWScalars scalars,
                                                               float no_decay, bool write,
                                                               const __grid_constant__ DecayArgs d,
                                                               uint16_t* compute, const int32_t* skip) {
  if (skip != nullptr && *skip != 0) return;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t start = blockIdx.x * int64_t(blockDim.x) + (threadIdx.x & ~31); start < n; start += stride) {
    const int64_t i = start + (threadIdx.x & 31);
    const bool active = i < n;
    float mi = 0.0f, vi = 0.0f;
    if (active) {
      float pi = param[i];
      mi = gen_decode(m, i);
      vi = gen_decode(v, i);
      AdamWScalars sc = scalars;
      sc.decay = gen_in_decay(d, i) ? scalars.decay : no_decay;
      if (uses_folded_update(m.codec, v.codec)) {
        adamw_math::adamw_update_folded(pi, grad[i], mi, vi, sc);
      } else {
        adamw_math::adamw_update(pi, grad[i], mi, vi, sc);
      }
      if (write) {
        param[i] = pi;
        if (compute != nullptr) compute[i] = float_to_bf16(pi);
        gen_encode(m, i, mi);
        gen_encode(v, i, vi);
      }
    }
    if (!write) {
      if (is_grouped(m.codec)) gen_add_stats(m.stats, active ? i / m.group_size : 0, mi, active);
      if (is_grouped(v.codec)) gen_add_stats(v.stats, active ? i / v.group_size : 0, vi, active);
    }
  }
}

__global__ __launch_bounds__(kGenThreads) void gen_quantize_kernel(const float* x, int64_t n, GenMoment m,
                                                                   bool write) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t start = blockIdx.x * int64_t(blockDim.x) + (threadIdx.x & ~31); start < n; start += stride) {
    const int64_t i = start + (threadIdx.x & 31);
    const bool active = i < n;
    const float xi = active ? x[i] : 0.0f;
    if (write) {
      if (active) gen_encode(m, i, xi);
    } else if (is_grouped(m.codec)) {
      gen_add_stats(m.stats, active ? i / m.group_size : 0, xi, active);
    }
  }
}

__global__ __launch_bounds__(kGenThreads) void gen_decode_kernel(GenMoment m, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = gen_decode(m, i);
  }
}

/// A GenMoment over b with its workspace (kept alive in `storage`).
GenMoment gen_moment(const MomentBuffers& b, int64_t n, Tensor& storage, bool with_new_meta) {
  GenMoment g;
  g.codec = b.codec;
  g.codes = b.codes.data_ptr();
  if (!is_grouped(b.codec)) return g;
  g.scale = b.scale.data<float>();
  if (is_expand(b.codec)) {
    g.expo = b.expo.data<float>();
    g.center = b.center.data<float>();
    g.tables = tables_of(b);
  }
  g.group_size = b.group_size;
  g.groups = (n + b.group_size - 1) / b.group_size;
  const int64_t per_group = 3 + 3 + 2 + (with_new_meta ? 3 : 0);  // 4-byte words
  storage = Tensor::empty(b.codes.context(), {g.groups * per_group}, DType::F32, MemoryCategory::Workspace);
  float* w = storage.data<float>();
  g.decoders = w;
  g.encoders = w + 3 * g.groups;
  g.stats = reinterpret_cast<uint32_t*>(w + 6 * g.groups);
  g.new_meta = with_new_meta ? w + 8 * g.groups : nullptr;
  return g;
}

void gen_group_launch(void (*kernel)(GenMoment, bool), const GenMoment& g, bool flag, const Tensor& like) {
  if (g.groups == 0) return;
  kernel<<<grid_for(like, g.groups, kGenThreads), kGenThreads, 0, stream_of(like)>>>(g, flag);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace

void general_step(Tensor& param, const Tensor& grad, const MomentBuffers& m, const MomentBuffers& v,
                  const AdamWScalars& with_decay, const AdamWScalars& without_decay, const DecayArgs& d,
                  uint16_t* compute, const int32_t* skip_flag) {
  const int64_t n = param.numel();
  cudaStream_t stream = stream_of(param);
  Tensor ws_m, ws_v;
  const GenMoment gm = gen_moment(m, n, ws_m, true), gv = gen_moment(v, n, ws_v, true);
  gen_group_launch(gen_prepare_kernel, gm, true, param);
  gen_group_launch(gen_prepare_kernel, gv, true, param);
  const unsigned grid = grid_for(param, n, kGenThreads);
  gen_step_kernel<<<grid, kGenThreads, 0, stream>>>(param.data<float>(), grad.data<float>(), n, gm, gv,
                                                    with_decay, without_decay.decay, false, d, nullptr, skip_flag);
  COAT_CUDA_CHECK_LAST_LAUNCH();
  gen_group_launch(gen_params_kernel, gm, false, param);
  gen_group_launch(gen_params_kernel, gv, false, param);
  gen_step_kernel<<<grid, kGenThreads, 0, stream>>>(param.data<float>(), grad.data<float>(), n, gm, gv,
                                                    with_decay, without_decay.decay, true, d, compute, skip_flag);
  COAT_CUDA_CHECK_LAST_LAUNCH();
  if (gm.groups > 0) {
    gen_commit_kernel<<<grid_for(param, gm.groups, kGenThreads), kGenThreads, 0, stream>>>(gm, skip_flag);
    COAT_CUDA_CHECK_LAST_LAUNCH();
  }
  if (gv.groups > 0) {
    gen_commit_kernel<<<grid_for(param, gv.groups, kGenThreads), kGenThreads, 0, stream>>>(gv, skip_flag);
    COAT_CUDA_CHECK_LAST_LAUNCH();
  }
}

}  // namespace coat::cuda::qadamw

namespace coat::cuda {

using namespace qadamw;

void quantize_moment(const Tensor& values, MomentBuffers& out) {
  const int64_t n = values.numel();
  if (n == 0) return;
  Tensor ws;
  const GenMoment g = gen_moment(out, n, ws, false);
  cudaStream_t stream = stream_of(values);
  const unsigned grid = grid_for(values, n, kGenThreads);
  if (is_grouped(out.codec)) {
    gen_group_launch(gen_prepare_kernel, g, false, values);
    gen_quantize_kernel<<<grid, kGenThreads, 0, stream>>>(values.data<float>(), n, g, false);
    COAT_CUDA_CHECK_LAST_LAUNCH();
    gen_group_launch(gen_params_kernel, g, true, values);
  }
  gen_quantize_kernel<<<grid, kGenThreads, 0, stream>>>(values.data<float>(), n, g, true);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

void dequantize_moment(const MomentBuffers& m, Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  Tensor ws;
  const GenMoment g = gen_moment(m, n, ws, false);
  gen_group_launch(gen_prepare_kernel, g, true, out);
  gen_decode_kernel<<<grid_for(out, n, kGenThreads), kGenThreads, 0, stream_of(out)>>>(g, n,
                                                                                       out.data<float>());
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace coat::cuda
