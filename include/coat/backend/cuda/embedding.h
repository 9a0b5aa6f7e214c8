// cuda kernels: embedding lookup and its deterministic backward. Callers (coat/ops) validate shapes, dtypes
// and devices; the id range is checked on the device, where the ids are read: a flag (the first bad
// position) is read back after the kernel, one small host synchronisation per call.
#pragma once

#include "coat/core/tensor.h"

namespace coat::cuda {

/// out[n] = weight[ids[n]] for weight [V, D] (any 2-, 4- or 8-byte dtype) and contiguous ids (i32/i64) of
/// N elements, out [N * D]. An id outside [0, V) is an InvalidArgument naming the first such id, its
/// position and V (out is then partly written).
void embedding(const Tensor& weight, const Tensor& ids, Tensor& out);
/// dweight_accum[ids[n]] += dy[n] (dy f32/f64/bf16, dweight_accum f32/f64): positions are sorted by id
/// (stable radix sort), then each (id, column) adds its rows in position order, so the result is
/// bit-identical to the CPU's sequential scatter-add. All ids are checked before anything is written.
void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dweight_accum);

}  // namespace coat::cuda
