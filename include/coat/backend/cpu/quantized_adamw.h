// cpu kernels of the compressed optimizer moments: the fused AdamW step over F32 / BF16 / FP8 / FP8-with-
// expansion moments, and quantize / dequantize of one moment. The reference for the CUDA twin: both run the
// scalar code of coat/backend/moment_codec.h and adamw_math::adamw_update, so they store the same bytes.
// Callers (coat/ops) validate dtypes, shapes, devices and ranges; these functions assume them valid.
#pragma once

#include <cstdint>
#include <vector>

#include "coat/backend/cpu/optimizer.h"
#include "coat/backend/moment_codec.h"
#include "coat/core/tensor.h"

namespace coat::moment_codec {

/// One moment's buffers as the kernels see them: codes [numel] of code_dtype(codec); for grouped codecs
/// scale [groups] (and expo, center [groups] for the expansion), groups = ceil(numel / group_size).
struct MomentBuffers {
  Codec codec = Codec::F32;
  int64_t group_size = 1;
  Tensor codes, scale, expo, center;
};

/// Where weight decay applies: everywhere (all), or on the union of [begin[i], end[i]) (sorted, disjoint,
/// non-empty, not touching: coat/ops merges them).
struct DecayPlan {
  bool all = false;
  std::vector<int64_t> begin, end;
};

}  // namespace coat::moment_codec

namespace coat::cpu {

/// The fused step: per element decode m, v; adamw_math::adamw_update with `with_decay` inside the plan's
/// ranges and `without_decay` (decay = 1) elsewhere; param written; m, v re-encoded with metadata from the
/// groups' new values. Two passes over the data when a moment is grouped (statistics, then encode).
/// skip (optional I32 [1], host memory): when non-zero nothing is written and true is returned (the compute
/// copy must stay as it is); otherwise false (the caller refreshes the compute copy).
bool adamw_step_quantized(Tensor& param, const Tensor& grad, moment_codec::MomentBuffers& m,
                          moment_codec::MomentBuffers& v, const adamw_math::AdamWScalars& with_decay,
                          const adamw_math::AdamWScalars& without_decay,
                          const moment_codec::DecayPlan& decay, const Tensor* skip = nullptr);

/// values: contiguous F32 [numel] -> out's codes and metadata.
void quantize_moment(const Tensor& values, moment_codec::MomentBuffers& out);

/// m decoded into the contiguous F32 [numel] tensor out.
void dequantize_moment(const moment_codec::MomentBuffers& m, Tensor& out);

}  // namespace coat::cpu
