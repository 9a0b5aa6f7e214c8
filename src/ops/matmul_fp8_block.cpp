// 128-block-scaled FP8 matrix product: validation here (shared by both backends, so the CPU reference keeps
// cuBLASLt's contract), kernels in the backends.
#include "coat/ops/matmul_fp8_block.h"

#include <string>

#include "coat/backend/block_scale_layout.h"
#include "coat/backend/cpu/gemm_fp8_block.h"
#include "coat/ops/dispatch.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/gemm_fp8_block.h"
#endif

namespace coat::ops {
namespace {

constexpr const char* kOp = "matmul_fp8_block";
constexpr int kBlock = static_cast<int>(fp8block::kBlock);
/// Rows of a: the 1x128 scale tensor's leading dimension round_up(M, 4) is then M (block_scale_layout.h).
constexpr int64_t kRowMultiple = fp8block::kScaleLdMultiple;

/// q checked as operand `name` with codes `dims`, which may have 1x128 groups and / or 128x128 blocks.
void check_operand(const Fp8Blocked& q, const char* name, const char* dims, bool may_be_1x128,
                   bool may_be_128x128) {
  COAT_ARG_CHECK(q.codes.defined(), kOp, "operand ", name, ": undefined codes");
  const bool is_1x128 = q.block_rows == 1 && q.block_cols == kBlock;
  const bool is_128x128 = q.block_rows == kBlock && q.block_cols == kBlock;
  const char* expected = may_be_1x128 && may_be_128x128 ? "1x128- or 128x128-quantized (ops::quantize_1x128 or "
                                                          "ops::quantize_128x128)"
                         : may_be_1x128 ? "1x128-quantized (ops::quantize_1x128)"
                                        : "128x128-quantized (ops::quantize_128x128)";
  COAT_ARG_CHECK((may_be_1x128 && is_1x128) || (may_be_128x128 && is_128x128), kOp, "operand ", name, " must be ",
                 expected, ", got ", q.block_rows, "x", q.block_cols, " blocks");
  COAT_ARG_CHECK(is_fp8(q.codes.dtype()), kOp, "operand ", name, ": codes have dtype ",
                 dtype_name(q.codes.dtype()), ", expected an FP8 format (e4m3 or e5m2)");
  COAT_ARG_CHECK(q.codes.dim() == 2, kOp, "operand ", name, ": codes must be 2-D ", dims, ", got ",
                 shape_str(q.codes.shape()));
  COAT_ARG_CHECK(q.codes.numel() == 0 || q.codes.is_contiguous(), kOp, "operand ", name,
                 ": codes must be contiguous (K innermost)");
  const Shape scale_shape = fp8block::scale_shape_blocked(q.codes.shape(), q.block_rows, kOp);
  COAT_ARG_CHECK(q.scale_inv.defined() && q.scale_inv.dtype() == DType::F32 && q.scale_inv.shape() == scale_shape,
                 kOp, "operand ", name, ": scale_inv must be f32 of shape ", shape_str(scale_shape),
                 " (the cuBLASLt layout of ops::Fp8Blocked), got ",
                 q.scale_inv.defined() ? q.scale_inv.str() : std::string("an undefined tensor"));
  COAT_ARG_CHECK(q.scale_inv.numel() == 0 || q.scale_inv.is_contiguous(), kOp, "operand ", name,
                 ": scale_inv must be contiguous");
  COAT_ARG_CHECK(q.scale_inv.context() == q.codes.context(), kOp, "operand ", name, ": scale_inv on ",
                 q.scale_inv.device().str(), ", codes on ", q.codes.device().str());
}

struct Dims {
  int64_t m, n, k;
};

Dims check_operands(const Fp8Blocked& a, const Fp8Blocked& b) {
  check_operand(a, "a", "[M,K]", /*may_be_1x128=*/true, /*may_be_128x128=*/false);
  check_operand(b, "b", "[N,K]", /*may_be_1x128=*/true, /*may_be_128x128=*/true);
  COAT_ARG_CHECK(a.codes.context() == b.codes.context(), kOp, "operands a and b on different contexts (",
                 a.codes.device().str(), " and ", b.codes.device().str(), ")");
  COAT_ARG_CHECK(!(a.codes.dtype() == DType::E5M2 && b.codes.dtype() == DType::E5M2), kOp,
                 "operands a and b are both e5m2: cuBLASLt has no e5m2 x e5m2 GEMM (allowed pairs: "
                 "e4m3 x e4m3, e5m2 x e4m3, e4m3 x e5m2)");
  const Dims d{a.codes.size(0), b.codes.size(0), a.codes.size(1)};
  COAT_ARG_CHECK(b.codes.size(1) == d.k, kOp, "shapes of a ", shape_str(a.codes.shape()), " [M,K] and b ",
                 shape_str(b.codes.shape()), " [N,K] do not match: K = ", d.k, " and ", b.codes.size(1));
  COAT_ARG_CHECK(d.m % kRowMultiple == 0, kOp, "M = ", d.m, " (rows of a) must be a multiple of ", kRowMultiple,
                 " for cuBLASLt's 1x128 scale layout. HINT: pad the rows of a");
  // With 1x128 groups on both operands cuBLASLt (CUDA 13, H100) refused M = 132 and N = 132 ("not
  // supported") where multiples of 128 run: both are held to 128 for a 1x128-quantized b.
  COAT_ARG_CHECK(b.block_rows != 1 || (d.m % kBlock == 0 && d.n % kBlock == 0), kOp, "M = ", d.m, " and N = ", d.n,
                 " (rows of a and of the 1x128-quantized b) must be multiples of ", kBlock,
                 " (cuBLASLt has no 1x128 x 1x128 GEMM for other shapes). HINT: pad the rows");
  return d;  // K (and N for a 128x128-blocked b) multiples of 128: checked with the scale shapes
}

void check_out_dtype(DType t) {
  COAT_ARG_CHECK(t == DType::BF16 || t == DType::F32, kOp, "output dtype ", dtype_name(t),
                 " not supported; expected bf16 or f32");
}

}  // namespace

void matmul_fp8_block(const Fp8Blocked& a, const Fp8Blocked& b, Tensor& out, bool accumulate) {
  const Dims d = check_operands(a, b);
  COAT_ARG_CHECK(out.defined(), kOp, "output: undefined tensor");
  check_out_dtype(out.dtype());
  COAT_ARG_CHECK(out.shape() == Shape({d.m, d.n}), kOp, "output shape ", shape_str(out.shape()), " should be ",
                 shape_str({d.m, d.n}), " ([M,N] for a ", shape_str(a.codes.shape()), " and b ",
                 shape_str(b.codes.shape()), ")");
  COAT_ARG_CHECK(out.numel() == 0 || out.is_contiguous(), kOp, "output must be contiguous");
  COAT_ARG_CHECK(out.context() == a.codes.context(), kOp, "output on ", out.device().str(), ", operands on ",
                 a.codes.device().str(), " (must be the same context)");
  COAT_DISPATCH(kOp, out.device(),
                cpu::matmul_fp8_block(a.codes, a.scale_inv, b.codes, b.scale_inv, b.block_rows, out, accumulate),
                cuda::matmul_fp8_block(a.codes, a.scale_inv, b.codes, b.scale_inv, b.block_rows, out, accumulate));
}

Tensor matmul_fp8_block(const Fp8Blocked& a, const Fp8Blocked& b, DType out_dtype) {
  const Dims d = check_operands(a, b);
  check_out_dtype(out_dtype);
  Tensor out = Tensor::empty(a.codes.context(), {d.m, d.n}, out_dtype);
  matmul_fp8_block(a, b, out, /*accumulate=*/false);
  return out;
}

}  // namespace coat::ops
