// CPU kernels' row maxima: max |v| over a row of an output as it is stored, for the kernels that also write
// the maxima of their output rows (norms, packed SwiGLU) so that a per-tensor FP8 scale needs no pass of its
// own (ops::quantize_per_tensor_from_row_maxima). The max runs on the amax keys of quantize_math.h: NaN and
// inf propagate exactly as in the tensor amax that the maxima stand in for.
#pragma once

#include <cstdint>
#include <type_traits>

#include "coat/backend/cpu/typed_storage.h"
#include "coat/backend/quantize_math.h"

namespace coat::cpu {

/// max |row[i]| over i < d as F32 (canonical NaN for a row holding a NaN). Outputs FP8 quantisation reads
/// only: f32 and bf16 (an f64 row throws; coat/ops refuses it first).
template <typename S>
float stored_row_max(const S* row, int64_t d) {
  if constexpr (std::is_same_v<S, double>) {
    COAT_CHECK(false, NotImplemented, "[row_max] cpu: row maxima are written for f32 and bf16 outputs, not f64");
    return 0.0f;
  } else {
    uint32_t key = 0;
    for (int64_t i = 0; i < d; ++i) key = fp8math::max_key(key, fp8math::amax_key(widen(row[i])));
    return fp8math::amax_from_key(key);
  }
}

}  // namespace coat::cpu
