// Internal to quantized_adamw.cu, quantized_adamw_fused.cu and quantized_adamw_general.cu: what the fused
// AdamW step and the general path share (the decay plan as kernel arguments, the decay range search, a code's
// decode, a group's stored metadata) and the functions by which quantized_adamw.cu dispatches to either path.
// Per element the kernels run the CPU twin's scalar code (moment_codec.h, adamw_math::adamw_update); group
// statistics are exact unsigned max / min of keys, so their reduction order does not matter, and the
// per-group metadata comes from the same functions: the bytes are the CPU's.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "coat/backend/cuda/expand_tables.h"
#include "coat/backend/cuda/quantized_adamw.h"
#include "coat/core/float_formats.h"

namespace coat::cuda::qadamw {

using namespace moment_codec;
using adamw_math::AdamWScalars;

inline constexpr unsigned kFullMask = 0xFFFFFFFFu;

/// The decay plan as kernel parameters: all, or `count` sorted ranges, inline when they fit.
struct DecayArgs {
  int all = 1;
  int count = 0;
  const int64_t* begin = nullptr;  // device arrays when count > kInlineDecayRanges
  const int64_t* end = nullptr;
  int64_t inline_begin[kInlineDecayRanges];
  int64_t inline_end[kInlineDecayRanges];
};

// ---- small device helpers ----

/// First r in [lo, hi) with end[r] > e (hi when none).
__device__ __forceinline__ int first_ending_after(const int64_t* end, int lo, int hi, int64_t e) {
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (end[mid] <= e) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/// First r in [lo, hi) with begin[r] >= e (hi when none).
__device__ __forceinline__ int first_beginning_from(const int64_t* begin, int lo, int hi, int64_t e) {
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (begin[mid] < e) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/// The first entry of the expansion's table row for a group of exponent k (rows of kExpandMagnitudes
/// entries; unsigned, so that base + offset is one 32 x 32 -> 64-bit multiply-add).
__device__ __forceinline__ uint32_t table_offset(float k) {
  return static_cast<uint32_t>(expand_row(k)) * kExpandMagnitudes;
}

/// One element's value from its code: plain FP8 (q * s), expansion (f * T_r[|q|], the table row in L1;
/// `row` = table_offset), or the F32 / BF16 value itself.
template <Codec C>
__device__ __forceinline__ float decode_code(code_t<C> code, const GroupCoder& c, const float* values,
                                             uint32_t row) {
  if constexpr (!is_grouped(C)) {
    return load_plain<C>(code);
  } else if constexpr (is_expand(C)) {
    return decode_expand_entry(code, c.f, __ldg(values + (row | (code & 0x7Fu))));
  } else {
    return fp8math::dequantize_value<fp8_format(C)>(code, c.a);
  }
}

/// Stored metadata of group g of a moment.
template <Codec C>
__device__ __forceinline__ GroupMeta load_meta(const float* scale, const float* expo, const float* center,
                                               int64_t g) {
  GroupMeta m;
  m.scale = scale[g];
  if constexpr (is_expand(C)) {
    m.expo = expo[g];
    m.center = center[g];
  }
  return m;
}

template <Codec C>
__device__ __forceinline__ void store_meta(float* scale, float* expo, float* center, int64_t g,
                                           const GroupMeta& m) {
  scale[g] = m.scale;
  if constexpr (is_expand(C)) {
    expo[g] = m.expo;
    center[g] = m.center;
  }
}

// ---- host side ----

/// The expansion's tables of b's FP8 format (built on the codes' stream at the first use); none otherwise.
ExpandTableView tables_of(const MomentBuffers& b);

/// Whether the fused step takes moment b: not grouped, or groups of a power-of-two size in [32, 4096].
bool fast_groups(const MomentBuffers& b);

/// The fused step (quantized_adamw_fused.cu; both moments fast_groups): one launch over the whole tiles, one
/// more for a partial last tile; writes maxima when given.
void fused_step(Tensor& param, const Tensor& grad, const MomentBuffers& m, const MomentBuffers& v,
                const AdamWScalars& with_decay, const AdamWScalars& without_decay, const DecayArgs& d,
                uint16_t* compute, const int32_t* skip_flag, Tensor* maxima);

/// The general step (quantized_adamw_general.cu): any group sizes, several launches over a workspace of the
/// groups.
void general_step(Tensor& param, const Tensor& grad, const MomentBuffers& m, const MomentBuffers& v,
                  const AdamWScalars& with_decay, const AdamWScalars& without_decay, const DecayArgs& d,
                  uint16_t* compute, const int32_t* skip_flag);

}  // namespace coat::cuda::qadamw
