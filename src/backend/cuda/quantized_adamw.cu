// The compressed optimizer moments' AdamW step on CUDA: the decay plan as kernel arguments, then the fused
// step (quantized_adamw_fused.cu) when both moments' groups fit its tiles, else the general path
// (quantized_adamw_general.cu).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/launch.h"
#include "quantized_adamw_internal.cuh"

namespace coat::cuda::qadamw {
namespace {

/// Ranges beyond the inline capacity: copied into device arrays by kernels (their values travel as
/// parameters), so that the host never waits.
struct RangeChunk {
  int64_t offset = 0;
  int count = 0;
  int64_t begin[kInlineDecayRanges];
  int64_t end[kInlineDecayRanges];
};

__global__ void upload_ranges_kernel(const __grid_constant__ RangeChunk c, int64_t* begin, int64_t* end) {
  const int i = threadIdx.x;
  if (i < c.count) {
    begin[c.offset + i] = c.begin[i];
    end[c.offset + i] = c.end[i];
  }
}

/// The plan as kernel arguments; ranges beyond the inline capacity go to `storage` (a workspace on the
/// context of `like`, kept alive by the caller until the launches are queued).
DecayArgs decay_args(const DecayPlan& plan, const Tensor& like, Tensor& storage) {
  DecayArgs d;
  d.all = plan.all ? 1 : 0;
  const int64_t count = static_cast<int64_t>(plan.begin.size());
  COAT_CHECK(count < (int64_t{1} << 30), InvalidArgument,
             "[adamw_step_quantized] too many decay ranges: ", count);
  d.count = static_cast<int>(count);
  if (count <= kInlineDecayRanges) {
    for (int64_t i = 0; i < count; ++i) {
      d.inline_begin[i] = plan.begin[size_t(i)];
      d.inline_end[i] = plan.end[size_t(i)];
    }
    return d;
  }
  storage = Tensor::empty(like.context(), {2 * count}, DType::I64, MemoryCategory::Workspace);
  int64_t* begin = storage.data<int64_t>();
  int64_t* end = begin + count;
  cudaStream_t stream = stream_of(like);
  for (int64_t offset = 0; offset < count; offset += kInlineDecayRanges) {
    RangeChunk c;
    c.offset = offset;
    c.count = static_cast<int>(std::min<int64_t>(kInlineDecayRanges, count - offset));
    for (int i = 0; i < c.count; ++i) {
      c.begin[i] = plan.begin[size_t(offset + i)];
      c.end[i] = plan.end[size_t(offset + i)];
    }
    upload_ranges_kernel<<<1, kInlineDecayRanges, 0, stream>>>(c, begin, end);  // one thread per range
    COAT_CUDA_CHECK_LAST_LAUNCH();
  }
  d.begin = begin;
  d.end = end;
  return d;
}

}  // namespace

/// The expansion's tables of b's FP8 format (built on the codes' stream at the first use); none otherwise.
ExpandTableView tables_of(const MomentBuffers& b) {
  if (!is_expand(b.codec)) return ExpandTableView{};
  return context_of(b.codes).expand_tables().get(fp8_format(b.codec), stream_of(b.codes));
}

}  // namespace coat::cuda::qadamw

namespace coat::cuda {

using namespace qadamw;

bool adamw_step_quantized(Tensor& param, const Tensor& grad, MomentBuffers& m, MomentBuffers& v,
                          const AdamWScalars& with_decay, const AdamWScalars& without_decay,
                          const DecayPlan& decay, Tensor* compute_copy, const Tensor* skip, Tensor* maxima,
                          bool* maxima_done) {
  const int64_t n = param.numel();
  const int32_t* skip_flag = skip != nullptr ? skip->data<int32_t>() : nullptr;
  uint16_t* compute = compute_copy != nullptr ? static_cast<uint16_t*>(compute_copy->data_ptr()) : nullptr;
  if (n == 0) return true;
  Tensor range_storage;
  const DecayArgs d = decay_args(decay, param, range_storage);
  if (fast_groups(m) && fast_groups(v)) {
    fused_step(param, grad, m, v, with_decay, without_decay, d, compute, skip_flag, maxima);
    if (maxima_done != nullptr) *maxima_done = maxima != nullptr;
    return true;
  }
  general_step(param, grad, m, v, with_decay, without_decay, d, compute, skip_flag);
  return true;
}

}  // namespace coat::cuda
