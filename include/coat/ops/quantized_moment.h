// Optimizer moments stored compressed (COAT's FP8 AdamW states, ../shared/docs/COAT_NOTES.md section 3): F32,
// BF16, FP8 with one scale per group of contiguous elements, or FP8 with dynamic range expansion (scale,
// exponent k and centre g per group), and the fused AdamW step over them. The formulas, the target range R
// and the bounds of k are documented in coat/backend/moment_codec.h; CPU and CUDA store identical bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "coat/core/context.h"
#include "coat/core/tensor.h"
#include "coat/ops/optimizer.h"

namespace coat::ops {

enum class MomentEncoding { F32, BF16, FP8, FP8Expand };

struct MomentSpec {
  MomentEncoding encoding = MomentEncoding::F32;
  DType fp8 = DType::E4M3;   ///< E4M3 or E5M2, used by FP8 / FP8Expand
  int64_t group_size = 128;  ///< contiguous elements per scale group (FP8 / FP8Expand); > 0
};

/// Validates spec (encoding one of the four, fp8 is E4M3 or E5M2, group_size in [1, 65536]) and throws
/// InvalidArgument naming the field. Every field is checked whatever the encoding.
void validate(const MomentSpec& spec);

/// "fp8-expand(e4m3, group 128)", "bf16", ... for messages.
std::string moment_spec_str(const MomentSpec& spec);

struct QuantizedMoment {
  MomentSpec spec;
  int64_t numel = 0;
  Tensor codes;   ///< [numel]: F32 | BF16 | E4M3 | E5M2 per encoding
  Tensor scale;   ///< [groups] F32: the scale s (FP8) or log2 s (FP8Expand); undefined otherwise
  Tensor expo;    ///< [groups] F32, the expansion exponent k (FP8Expand); undefined otherwise
  Tensor center;  ///< [groups] F32, log2 of the recentring value g (FP8Expand); undefined otherwise

  /// ceil(numel / group_size) for FP8/FP8Expand, 0 otherwise.
  int64_t groups() const;
  /// codes + metadata bytes.
  size_t bytes() const;
  /// All tensors of this moment by suffix, for checkpoints (defined ones only): {"", codes}, {".scale", ...}
  /// (FP8); {".log2_scale", ...}, {".expo", ...}, {".log2_center", ...} (FP8Expand).
  std::vector<std::pair<std::string, Tensor>> tensors() const;
};

/// A zero moment (all codes 0, scale 0, expo 1, center 0) of numel elements on ctx's device, allocated in
/// `category`.
/// The allocations make_moment makes for a moment of numel elements: the codes (numel elements of the
/// code dtype), and one F32 buffer of group metadata holding `parts` parts (scale; + exponent and centre with
/// expansion) of `stride` floats each (the group count padded to 4: every part starts on 16 bytes).
struct MomentLayout {
  DType code_dtype = DType::F32;
  int64_t groups = 0;
  int parts = 0;       ///< 0 without groups
  int64_t stride = 0;  ///< floats per part
  size_t code_bytes(int64_t numel) const { return static_cast<size_t>(numel) * dtype_size(code_dtype); }
  size_t metadata_bytes() const { return static_cast<size_t>(parts * stride) * sizeof(float); }
};
MomentLayout moment_layout(const MomentSpec& spec, int64_t numel);

QuantizedMoment make_moment(const ContextPtr& ctx, int64_t numel, const MomentSpec& spec,
                            MemoryCategory category);

/// F32 [numel] values -> the moment's encoding (same device). Groups computed as the step kernel does.
void quantize_moment(const Tensor& values, QuantizedMoment& out);

/// The moment decoded to F32 [numel] (a new tensor on the moment's device).
Tensor dequantize_moment(const QuantizedMoment& m);

/// Half-open element range [begin, end) of the flat buffer where weight decay applies.
struct DecayRange {
  int64_t begin = 0;
  int64_t end = 0;
};

/// ONE fused pass over flat buffers (one kernel launch on CUDA, no host synchronisation): per element,
/// dequantise m and v -> the AdamW update of ops::adamw_step (grad_scale, decoupled weight decay
/// h.weight_decay applied only to elements inside some decay range, bias correction with h.step) on the F32
/// master `param` -> requantise m and v (per group: new scale / k / g computed from the group's NEW values).
/// The parameter update uses the new moments before requantisation. With F32 encodings for both moments the
/// bits are those of ops::adamw_step (with weight_decay where a range covers the element, 0 elsewhere).
/// param, grad: F32 contiguous [numel]; m.numel == v.numel == numel; same device.
/// decay_ranges: sorted, non-overlapping, within [0, numel) (validated); empty ranges are allowed.
/// On CUDA, up to 128 ranges (cuda::kInlineDecayRanges, counted after merging touching ones) travel as kernel
/// parameters; more take one extra small launch per 128. Group sizes other than powers of two in [32, 1024]
/// take a slower multi-launch path (still no host synchronisation). Weight decay 0 skips the range lookups.
/// compute_copy (optional): a BF16 [numel] contiguous tensor on param's device that receives the updated
/// parameters rounded to nearest even (the mixed-precision compute weights), written in the same pass on
/// CUDA (elsewhere by a copy afterwards): the bits of ops::copy_(compute_copy, param).
/// skip (optional): an I32 [1] contiguous flag on param's device (ops::flag_nonfinite sets it); when it is
/// non-zero as the step runs, param, m, v (codes and metadata) and compute_copy are left untouched. On CUDA
/// the kernels read it from device memory and return at once (one uniform early-out per block; the host
/// never reads it), so a step can be queued before the device knows whether it may run.
/// maxima (optional): an F32 [ceil(numel / kStepMaximaGranule)] contiguous tensor on param's device that
/// receives max |param| of each granule of kStepMaximaGranule elements after the update (the last granule may
/// be shorter), as ops::group_amax computes it (NaN and inf propagate): the per-tensor FP8 scale of a weight
/// that covers whole granules then needs no pass over it (ops::quantize_per_tensor_from_maxima). Written in
/// the update's pass by CUDA's fused kernel, elsewhere by a pass afterwards. Meaningless after a skipped step
/// (left as they were on CUDA's fused path): use them only when the step ran.
void adamw_step_quantized(Tensor& param, const Tensor& grad, QuantizedMoment& m, QuantizedMoment& v,
                          const AdamWHyper& h, const std::vector<DecayRange>& decay_ranges,
                          Tensor* compute_copy = nullptr, const Tensor* skip = nullptr, Tensor* maxima = nullptr);

/// The granule of adamw_step_quantized's maxima: one warp's 32 x 4 elements in CUDA's fused step.
inline constexpr int64_t kStepMaximaGranule = 128;
/// How many maxima a buffer of numel elements has: ceil(numel / kStepMaximaGranule).
constexpr int64_t step_maxima_count(int64_t numel) { return (numel + kStepMaximaGranule - 1) / kStepMaximaGranule; }
/// The granule maxima of a flat F32 buffer x [n] into out (F32 [ceil(n / kStepMaximaGranule)]): what
/// adamw_step_quantized writes into `maxima`, as a pass of its own.
void step_maxima(const Tensor& x, Tensor& out);

}  // namespace coat::ops
