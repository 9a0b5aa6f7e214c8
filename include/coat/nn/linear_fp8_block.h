// linear through 128-block-scaled FP8 GEMMs (DeepSeek-V3 style; the fp8_block recipe of
// models/precision_recipe.h): y = x W^T with x [..., in], W [out, in], no bias.
//   fprop  y  = x W^T   x in 1x128 groups along `in` (E4M3) x W in 128x128 blocks (E4M3), BF16 out
//   dgrad  dx = dy W    dy in 1x128 groups along `out` (E5M2) x W^T in 128x128 blocks (E4M3), BF16 out
//   wgrad  dW = dy^T x  dy^T [out, rows] (E5M2) x x^T [in, rows] (E4M3), both in 1x128 groups along the
//                       rows (the tokens, the GEMM's K); accumulated in FP32 into the parameter's gradient
//                       (written with beta 0 when its grad_unset is set)
// One scale per group or block (amax on the device, no host synchronisation), so an outlier only coarsens its
// own 128 (or 128x128) neighbours. Both wgrad operands are grouped along K because a weight gradient sums
// over the tokens: cuBLASLt's VEC128_32F x VEC128_32F ("1D x 1D") product, ops::matmul_fp8_block with a 1x128
// b. W and W^T come from `weights` (quantised once per optimizer step). The input is saved in BF16 (as the
// fp8 recipe) and quantised again, along the tokens, in the backward; or, with save_fp8_input, quantised
// both ways in the forward from one read (ops::quantize_1x128_pair) and kept as the wgrad's E4M3 x^T groups
// (half the bytes; the same codes, so the same gradients). The backward's dy is quantised both ways from one
// read when both GEMMs need it. Requirements: x BF16; the row count of
// x (tokens), in_features and out_features multiples of 128 (the block edge): other shapes are refused with
// the weight's name (keep the layer in BF16: precision.bf16_layers).
#pragma once

#include "coat/autograd/tape.h"
#include "coat/nn/fp8_block_weights.h"
#include "coat/nn/parameter.h"

namespace coat::nn {

autograd::Var linear_fp8_block(autograd::Tape& tape, const autograd::Var& x, Parameter& weight,
                               Fp8BlockWeights& weights, bool save_fp8_input = false);

}  // namespace coat::nn
