// cuda kernels of the compressed optimizer moments: the fused AdamW step over F32 / BF16 / FP8 / FP8-with-
// expansion moments, and quantize / dequantize of one moment. Same scalar code as the CPU twin
// (coat/backend/moment_codec.h, adamw_math::adamw_update), so the same bytes. Callers (coat/ops) validate
// dtypes, shapes, devices and ranges; these functions assume them valid. Nothing here synchronises the host.
#pragma once

#include "coat/backend/cpu/quantized_adamw.h"
#include "coat/core/tensor.h"

namespace coat::cuda {

/// Decay ranges carried in the kernel's parameters; more take one extra small launch per this many ranges
/// (copied into a workspace buffer by kernels, no host synchronisation).
inline constexpr int kInlineDecayRanges = 128;

/// The fused step. When every grouped moment has a power-of-two group size in [32, 4096]: ONE launch of
/// persistent 512-thread blocks over the whole tiles of 4096 elements (whole groups; a partial last tile goes to
/// a second, one-block launch): 4-element vector loads, the next tile bulk-prefetched into L2 and its group
/// metadata copied into shared memory asynchronously, group statistics reduced with redux / shuffles into
/// shared memory, the new metadata of a tile computed while the next tile's coders are prepared (double-
/// buffered, two barriers per tile). The expansion reads its decoded magnitudes and code bounds from the
/// context's tables (ExpandTables) and checks a hardware guess of each code against its bounds. Otherwise a
/// general path of several launches (per moment: coders, new metadata, commit; over the elements: statistics
/// with global atomics, then update + encode) over a workspace of the groups.
/// Measured on an H100 (0.81B parameters = the 28 matrices of 4 Llama-2-7B layers, groups of 128,
/// DISABLED_Llama2_7B_FourLayers in tests/backend/cuda/test_quantized_adamw.cpp): FP8Expand E4M3 for both
/// moments 5.76 ms = 2.30 TB/s counting 16.38 bytes per parameter, 77% of a device-to-device copy (the same
/// with a unit's decay ranges); plain FP8 84%; PyTorch's fused FP32 AdamW 8.86 ms on the same shapes.
/// The BF16 compute copy (if any) is written in the pass that writes param, on both paths; returns true
/// (nothing for the caller to copy). skip (optional I32 [1] on the device): every launch that writes reads
/// it first and returns when it is non-zero, so a skipped step leaves param, codes, metadata and the compute
/// copy untouched without a host synchronisation. maxima (optional, F32 [ceil(numel / 128)]): the fused path
/// also writes max |param| of each 128 elements after the update (one warp reduction per 128; the granule of
/// ops::kStepMaximaGranule) and sets *maxima_done; the general path leaves them to the caller.
bool adamw_step_quantized(Tensor& param, const Tensor& grad, moment_codec::MomentBuffers& m,
                          moment_codec::MomentBuffers& v, const adamw_math::AdamWScalars& with_decay,
                          const adamw_math::AdamWScalars& without_decay,
                          const moment_codec::DecayPlan& decay, Tensor* compute_copy = nullptr,
                          const Tensor* skip = nullptr, Tensor* maxima = nullptr, bool* maxima_done = nullptr);

/// values: contiguous F32 [numel] -> out's codes and metadata (empty statistics, statistics, metadata,
/// encode: four launches; one for F32 / BF16).
void quantize_moment(const Tensor& values, moment_codec::MomentBuffers& out);

/// m decoded into the contiguous F32 [numel] tensor out.
void dequantize_moment(const moment_codec::MomentBuffers& m, Tensor& out);

}  // namespace coat::cuda
