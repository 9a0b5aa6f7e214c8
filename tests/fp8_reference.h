// Test helpers of the FP8 GEMM tests (tests/ops/test_matmul_fp8*.cpp, tests/backend/cuda/test_gemm_fp8*.cpp):
// the format pairs the GEMMs take, an FP64 product from decoded codes (independent of the library's kernels:
// the codes are decoded with the float_formats decoders, products and sums taken in double in order
// k = 0..K-1), and the two comparisons (bitwise after one rounding; relative Frobenius error).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "coat/core/float_formats.h"
#include "coat/core/tensor.h"

namespace coat::test {

struct Fp8Pair {
  DType a, b;
};
/// The operand formats the FP8 GEMMs accept: every pair but e5m2 x e5m2.
inline constexpr Fp8Pair kFp8Pairs[] = {{DType::E4M3, DType::E4M3}, {DType::E5M2, DType::E4M3}, {DType::E4M3, DType::E5M2}};

/// "e4m3xe5m2->bf16[ fast_accum] M=.. N=.. K=..", naming a GPU test case.
inline std::string fp8_gemm_label(const Fp8Pair& p, DType od, int64_t m, int64_t n, int64_t k,
                                  bool fast_accum = false) {
  return std::string(dtype_name(p.a)) + "x" + std::string(dtype_name(p.b)) + "->" + std::string(dtype_name(od)) +
         (fast_accum ? " fast_accum" : "") + " M=" + std::to_string(m) + " N=" + std::to_string(n) +
         " K=" + std::to_string(k);
}

/// Code i of a host FP8 tensor (e4m3 or e5m2), decoded exactly.
inline double decode_fp8(const Tensor& codes, int64_t i) {
  const uint8_t c = codes.data<uint8_t>()[i];
  return codes.dtype() == DType::E4M3 ? static_cast<double>(e4m3_to_float(c))
                                      : static_cast<double>(e5m2_to_float(c));
}

/// Every code of a host FP8 tensor, decoded exactly.
inline std::vector<double> decode_fp8(const Tensor& codes) {
  std::vector<double> out(static_cast<size_t>(codes.numel()));
  for (int64_t i = 0; i < codes.numel(); ++i) out[static_cast<size_t>(i)] = decode_fp8(codes, i);
  return out;
}

/// The values of a host F32 or BF16 tensor, read from their bits.
inline std::vector<double> f32_or_bf16_values(const Tensor& t) {
  std::vector<double> out(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    out[static_cast<size_t>(i)] = t.dtype() == DType::F32 ? static_cast<double>(t.data<float>()[i])
                                                          : static_cast<double>(bf16_to_float(t.data<uint16_t>()[i]));
  }
  return out;
}

/// c + scale * (a[M,K] @ b[N,K]^T) in double, unrounded: products and the sum over k = 0..K-1 in double (the
/// product of two FP8 values, or of two dequantized ones, is exact), c[i*N+j] when given, else 0.
inline std::vector<double> matmul_nt_reference(const std::vector<double>& a, const std::vector<double>& b, int64_t m,
                                               int64_t n, int64_t k, double scale = 1.0,
                                               const std::vector<double>* c = nullptr) {
  std::vector<double> out(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    const double* ar = a.data() + i * k;
    for (int64_t j = 0; j < n; ++j) {
      const double* br = b.data() + j * k;
      double sum = 0.0;
      for (int64_t p = 0; p < k; ++p) sum += ar[p] * br[p];
      const size_t idx = static_cast<size_t>(i * n + j);
      out[idx] = (c != nullptr ? (*c)[idx] : 0.0) + scale * sum;
    }
  }
  return out;
}

/// Bitwise comparison of the host F32 or BF16 tensor `out` with the reference rounded once to out's dtype.
inline void expect_bitwise(const Tensor& out, const std::vector<double>& ref, const std::string& what) {
  int64_t mismatches = 0;
  for (int64_t i = 0; i < out.numel(); ++i) {
    const double r = ref[static_cast<size_t>(i)];
    bool same = false;
    if (out.dtype() == DType::F32) {
      const float want = static_cast<float>(r);
      same = std::memcmp(&want, out.data<float>() + i, sizeof(float)) == 0;
    } else {
      same = double_to_bf16(r) == out.data<uint16_t>()[i];
    }
    if (!same && ++mismatches <= 3) ADD_FAILURE() << what << ": element " << i << " differs (reference " << r << ")";
  }
  EXPECT_EQ(mismatches, 0) << what;
}

/// ||got - ref|| / ||ref|| (Frobenius norms).
inline double rel_frobenius(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = got[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

}  // namespace coat::test
