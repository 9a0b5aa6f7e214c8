// CUDA FP8 quantization against the CPU reference on random inputs: every function, several shapes (tile
// and block remainders, misaligned views), f32/bf16/f16 inputs, both formats, both saturation modes.
//
// Tolerance: exact bytes. Both backends run the same scalar functions (quantize_math.h) made of single,
// correctly rounded IEEE float operations (x * scale, fmt_max / amax, 1 / scale, code * scale_inv) and
// exact ones (|x|, max, the FP8 codec); the amax is a max, which is exact in any reduction order; NaNs are
// canonicalised. So any differing byte is a bug, not rounding noise.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "coat/backend/cpu/quantize.h"
#include "coat/core/float_formats.h"

#ifdef COAT_WITH_CUDA
#include <cuda_runtime_api.h>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/device_properties.h"
#include "coat/backend/cuda/quantize.h"
#include "coat/core/random_generator.h"
#include "coat/ops/creation.h"
#include "cuda_timing.h"
#endif

namespace coat {
namespace {

class CudaQuantize : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef COAT_WITH_CUDA
    GTEST_SKIP() << "built without CUDA";
#else
    if (cuda::device_count() == 0)
      GTEST_SKIP() << "no CUDA device: the CUDA quantization kernels are not run";
    cpu_ = std::make_shared<CpuContext>();
    gpu_ = std::make_shared<cuda::CudaContext>(0);
#endif
  }

  ContextPtr cpu_;
  ContextPtr gpu_;
};

#ifdef COAT_WITH_CUDA

void store(Tensor& t, int64_t i, float v) {
  switch (t.dtype()) {
    case DType::F32:
      t.data<float>()[i] = v;
      return;
    case DType::BF16:
      t.data<uint16_t>()[i] = float_to_bf16(v);
      return;
    case DType::F16:
      t.data<uint16_t>()[i] = float_to_f16(v);
      return;
    default:
      FAIL() << "unexpected dtype";
  }
}

/// Random non-zero values, log-uniform over 2^-8 .. 2^8 with both signs, and every 97th value pushed to
/// 6e4 (past E5M2's 57344 and E4M3's 448, still finite in f16) so that unscaled casts overflow.
Tensor random_host(const ContextPtr& cpu, const Shape& shape, DType dtype, uint32_t seed) {
  Tensor t = Tensor::empty(cpu, shape, dtype);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> exponent(-8.0f, 8.0f);
  std::bernoulli_distribution negative(0.5);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float magnitude = i % 97 == 5 ? 6e4f : std::exp2(exponent(rng));
    store(t, i, negative(rng) ? -magnitude : magnitude);
  }
  return t;
}

Tensor host_scalar(const ContextPtr& cpu, float v) {
  Tensor t = Tensor::empty(cpu, {1}, DType::F32);
  *t.data<float>() = v;
  return t;
}

/// A contiguous view starting one element into its storage: misaligned for vector loads.
Tensor offset_by_one(const ContextPtr& ctx, const Shape& shape, DType dtype) {
  auto storage =
      std::make_shared<Storage>(ctx, (shape_numel(shape) + 1) * dtype_size(dtype), MemoryCategory::Other);
  return Tensor::from_storage(storage, shape, dtype, 1);
}

class DeviceIo {
 public:
  explicit DeviceIo(ContextPtr gpu, ContextPtr cpu) : gpu_(std::move(gpu)), cpu_(std::move(cpu)) {}

  Tensor upload(const Tensor& host, bool misaligned = false) const {
    Tensor d = misaligned ? offset_by_one(gpu_, host.shape(), host.dtype())
                          : Tensor::empty(gpu_, host.shape(), host.dtype());
    COAT_CUDA_CHECK(cudaMemcpy(d.data_ptr(), host.data_ptr(), host.nbytes(), cudaMemcpyHostToDevice));
    COAT_CUDA_CHECK(cudaDeviceSynchronize());  // a pageable copy may still be in flight otherwise
    return d;
  }
  Tensor empty(const Shape& shape, DType dtype, bool misaligned = false) const {
    return misaligned ? offset_by_one(gpu_, shape, dtype) : Tensor::empty(gpu_, shape, dtype);
  }
  Tensor download(const Tensor& dev) const {
    gpu_->synchronize();  // kernels run on the context's stream
    Tensor h = Tensor::empty(cpu_, dev.shape(), dev.dtype());
    COAT_CUDA_CHECK(cudaMemcpy(h.data_ptr(), dev.data_ptr(), dev.nbytes(), cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  ContextPtr gpu_, cpu_;
};

/// Byte equality, reporting the first differing element.
void expect_same_bytes(const Tensor& expected, const Tensor& actual, const std::string& what) {
  ASSERT_EQ(expected.nbytes(), actual.nbytes()) << what;
  const auto* e = static_cast<const uint8_t*>(expected.data_ptr());
  const auto* a = static_cast<const uint8_t*>(actual.data_ptr());
  if (std::memcmp(e, a, expected.nbytes()) == 0) return;
  const size_t elem = dtype_size(expected.dtype());
  for (size_t b = 0; b < expected.nbytes(); ++b) {
    if (e[b] != a[b]) {
      ADD_FAILURE() << what << ": first difference at element " << b / elem << " of " << expected.numel()
                    << " (byte " << int(e[b]) << " expected, " << int(a[b]) << " on the GPU)";
      return;
    }
  }
}

std::string describe(const char* op, const Shape& shape, DType in, DType fmt) {
  return std::string(op) + " " + shape_str(shape) + " " + std::string(dtype_name(in)) + " -> " +
         std::string(dtype_name(fmt));
}

const std::vector<Shape> kShapes = {{1, 16}, {3, 48}, {67, 160}, {2, 5, 96}, {129, 4096}, {1, 1040}};
constexpr DType kInputs[] = {DType::F32, DType::BF16, DType::F16};
constexpr DType kFormats[] = {DType::E4M3, DType::E5M2};
constexpr Fp8Saturation kSats[] = {Fp8Saturation::Saturate, Fp8Saturation::NoSaturate};

// A tensor larger than the grid-stride loop's four-load stride (33.6M BF16 values on any GPU with up to
// 1000 SMs): the amax of a single planted maximum at the start, in the middle, in the last unrolled load
// and in the scalar tail, each exact against the CPU.
TEST_F(CudaQuantize, TensorAmaxOfALargeTensorFindsAPlantedMaximumAnywhere) {
  const DeviceIo dev(gpu_, cpu_);
  const Shape shape = {8191, 4101};  // odd: the last values in the scalar tail
  Tensor x = Tensor::empty(cpu_, shape, DType::BF16);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (int64_t i = 0; i < x.numel(); ++i) store(x, i, value(rng));
  const int64_t n = x.numel();
  for (int64_t at : {int64_t{0}, n / 2 + 3, n - 9, n - 1}) {
    store(x, at, at % 2 ? -3.5f : 3.5f);
    Tensor amax = host_scalar(cpu_, 0), damax = dev.empty({1}, DType::F32);
    cpu::tensor_amax(x, amax);
    cuda::tensor_amax(dev.upload(x), damax);
    expect_same_bytes(amax, dev.download(damax), "tensor_amax of 33.6M values, maximum at " + std::to_string(at));
    EXPECT_EQ(amax.data<float>()[0], 3.5f);
    store(x, at, 0.5f);
  }
}

// A scale from many maxima (a gate/up weight's step maxima: 720,896) takes a first launch over the device and
// then the one block; from few, the one block alone: both give the CPU's scale and inverse, with the largest
// maximum anywhere, and a NaN among them wins.
TEST_F(CudaQuantize, ScaleFromManyMaximaMatchesCpu) {
  const DeviceIo dev(gpu_, cpu_);
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> value(0.0f, 0.1f);
  for (int64_t n : {int64_t{1000}, int64_t{32768}, int64_t{32769}, int64_t{720'896}}) {
    Tensor maxima = Tensor::empty(cpu_, {n}, DType::F32);
    for (int64_t i = 0; i < n; ++i) maxima.data<float>()[i] = value(rng);
    for (int64_t at : {int64_t{0}, n / 2 + 1, n - 1}) {
      maxima.data<float>()[at] = 0.75f;
      for (DType fmt : {DType::E4M3, DType::E5M2}) {
        Tensor s = host_scalar(cpu_, 0), si = host_scalar(cpu_, 0);
        Tensor ds = dev.empty({1}, DType::F32), dsi = dev.empty({1}, DType::F32);
        cpu::compute_scale_from_maxima(maxima, fmt, s, si);
        cuda::compute_scale_from_maxima(dev.upload(maxima), fmt, ds, dsi);
        const std::string what = std::to_string(n) + " maxima, the largest at " + std::to_string(at);
        expect_same_bytes(s, dev.download(ds), "scale of " + what);
        expect_same_bytes(si, dev.download(dsi), "scale_inv of " + what);
        EXPECT_EQ(s.data<float>()[0], fp8math::fp8_max(fmt) / 0.75f) << what;
      }
      maxima.data<float>()[at] = 0.05f;
    }
    maxima.data<float>()[n - 2] = std::numeric_limits<float>::quiet_NaN();
    Tensor ds = dev.empty({1}, DType::F32), dsi = dev.empty({1}, DType::F32);
    cuda::compute_scale_from_maxima(dev.upload(maxima), DType::E4M3, ds, dsi);
    EXPECT_TRUE(std::isnan(dev.download(ds).data<float>()[0])) << n << " maxima with a NaN";
  }
}

TEST_F(CudaQuantize, PerTensorPipelineMatchesCpu) {
  const DeviceIo dev(gpu_, cpu_);
  uint32_t seed = 100;
  for (const Shape& shape : kShapes) {
    for (DType in : kInputs) {
      for (bool misaligned : {false, true}) {
        const Tensor x = random_host(cpu_, shape, in, ++seed);
        const Tensor dx = dev.upload(x, misaligned);
        Tensor amax = host_scalar(cpu_, 0), damax = dev.empty({1}, DType::F32);
        cpu::tensor_amax(x, amax);
        cuda::tensor_amax(dx, damax);
        expect_same_bytes(amax, dev.download(damax), describe("tensor_amax", shape, in, in));
        for (DType fmt : kFormats) {
          Tensor scale = host_scalar(cpu_, 0), scale_inv = host_scalar(cpu_, 0);
          Tensor dscale = dev.empty({1}, DType::F32), dscale_inv = dev.empty({1}, DType::F32);
          cpu::compute_scale(amax, fmt, scale, scale_inv);
          cuda::compute_scale(damax, fmt, dscale, dscale_inv);
          expect_same_bytes(scale, dev.download(dscale), describe("compute_scale", shape, in, fmt));
          expect_same_bytes(scale_inv, dev.download(dscale_inv),
                            describe("compute_scale inv", shape, in, fmt));
          // The computed scale, and scale 1 (a plain cast: the 6e4 values overflow both formats).
          for (float fixed : {0.0f, 1.0f}) {
            const Tensor s = fixed == 0.0f ? scale : host_scalar(cpu_, fixed);
            const Tensor si = fixed == 0.0f ? scale_inv : host_scalar(cpu_, fixed);
            const Tensor ds = dev.upload(s), dsi = dev.upload(si);
            for (Fp8Saturation sat : kSats) {
              Tensor codes = Tensor::empty(cpu_, shape, fmt);
              Tensor dcodes = dev.empty(shape, fmt, misaligned);
              cpu::quantize_per_tensor(x, s, sat, codes);
              cuda::quantize_per_tensor(dx, ds, sat, dcodes);
              expect_same_bytes(codes, dev.download(dcodes), describe("quantize_per_tensor", shape, in, fmt));
              for (DType out_dtype : kInputs) {
                Tensor out = Tensor::empty(cpu_, shape, out_dtype);
                Tensor dout = dev.empty(shape, out_dtype, misaligned);
                cpu::dequantize_per_tensor(codes, si, out);
                cuda::dequantize_per_tensor(dev.upload(codes, misaligned), dsi, dout);
                expect_same_bytes(out, dev.download(dout),
                                  describe("dequantize_per_tensor", shape, fmt, out_dtype));
              }
            }
          }
        }
      }
    }
  }
}

TEST_F(CudaQuantize, QuantizeTransposeMatchesCpu) {
  const DeviceIo dev(gpu_, cpu_);
  // Rows a multiple of 16 and whole 16-byte chunks of a row take the wide kernel: {64, 64}, {256, 1000}, the
  // partial tiles of {48, 200}, {80, 72}, {1040, 264} and {144, 392}, and {32, 68} in f32 only (68 is 17 f32 chunks, 8.5
  // bf16 ones). The others take the narrow kernel's paths.
  const std::vector<Shape> shapes = {{1, 1},      {63, 65},   {64, 64},  {130, 96}, {77, 129},  {96, 130},
                                     {256, 1000}, {1000, 36}, {48, 200}, {80, 72},  {32, 68}, {1040, 264}, {144, 392}};
  uint32_t seed = 200;
  for (const Shape& shape : shapes) {
    for (DType in : kInputs) {
      const Tensor x = random_host(cpu_, shape, in, ++seed);
      const Tensor dx = dev.upload(x);
      for (DType fmt : kFormats) {
        for (Fp8Saturation sat : kSats) {
          const Tensor s = host_scalar(cpu_, in == DType::F32 ? 0.75f : 3.0f);
          const Tensor ds = dev.upload(s);
          Tensor codes = Tensor::empty(cpu_, shape, fmt),
                 codes_t = Tensor::empty(cpu_, {shape[1], shape[0]}, fmt);
          Tensor dcodes = dev.empty(shape, fmt), dcodes_t = dev.empty({shape[1], shape[0]}, fmt);
          cpu::quantize_transpose_per_tensor(x, s, sat, codes, codes_t);
          cuda::quantize_transpose_per_tensor(dx, ds, sat, dcodes, dcodes_t);
          expect_same_bytes(codes, dev.download(dcodes),
                            describe("quantize_transpose codes", shape, in, fmt));
          expect_same_bytes(codes_t, dev.download(dcodes_t),
                            describe("quantize_transpose codes_t", shape, in, fmt));
        }
      }
    }
  }
}

TEST_F(CudaQuantize, PerGroupMatchesCpu) {
  const DeviceIo dev(gpu_, cpu_);
  struct Case {
    Shape shape;
    int64_t group;
  };
  // G = 16/32/128 as used, G = K (one group per row, longer than the registers cache), odd G (scalar path).
  const std::vector<Case> cases = {{{3, 48}, 16},     {{67, 160}, 16},   {{67, 160}, 32}, {{2, 5, 256}, 128},
                                   {{9, 384}, 128},   {{4, 4096}, 4096}, {{5, 96}, 24},   {{7, 21}, 3},
                                   {{129, 1040}, 16}, {{3, 8}, 8}};
  uint32_t seed = 300;
  for (const Case& c : cases) {
    const Shape& shape = c.shape;
    Shape scale_shape = shape;
    scale_shape.back() /= c.group;
    for (DType in : kInputs) {
      for (bool misaligned : {false, true}) {
        const Tensor x = random_host(cpu_, shape, in, ++seed);
        const Tensor dx = dev.upload(x, misaligned);
        Tensor amax = Tensor::empty(cpu_, scale_shape, DType::F32),
               damax = dev.empty(scale_shape, DType::F32);
        cpu::group_amax(x, c.group, amax);
        cuda::group_amax(dx, c.group, damax);
        expect_same_bytes(amax, dev.download(damax), describe("group_amax", shape, in, in));
        for (DType fmt : kFormats) {
          for (Fp8Saturation sat : kSats) {
            Tensor codes = Tensor::empty(cpu_, shape, fmt),
                   scale_inv = Tensor::empty(cpu_, scale_shape, DType::F32);
            Tensor dcodes = dev.empty(shape, fmt, misaligned),
                   dscale_inv = dev.empty(scale_shape, DType::F32);
            cpu::quantize_per_group(x, c.group, sat, codes, scale_inv);
            cuda::quantize_per_group(dx, c.group, sat, dcodes, dscale_inv);
            expect_same_bytes(codes, dev.download(dcodes),
                              describe("quantize_per_group codes", shape, in, fmt));
            expect_same_bytes(scale_inv, dev.download(dscale_inv),
                              describe("quantize_per_group scales", shape, in, fmt));
            for (DType out_dtype : kInputs) {
              Tensor out = Tensor::empty(cpu_, shape, out_dtype),
                     dout = dev.empty(shape, out_dtype, misaligned);
              cpu::dequantize_per_group(codes, scale_inv, c.group, out);
              cuda::dequantize_per_group(dcodes, dscale_inv, c.group, dout);
              expect_same_bytes(out, dev.download(dout),
                                describe("dequantize_per_group", shape, fmt, out_dtype));
            }
          }
        }
      }
    }
  }
}

TEST_F(CudaQuantize, NanInfAndZeroGroupsMatchCpu) {
  const DeviceIo dev(gpu_, cpu_);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = random_host(cpu_, {4, 128}, DType::F32, 400);
  float* xp = x.data<float>();
  xp[3] = -nan;   // group 0 (of 16)
  xp[20] = inf;   // group 1
  xp[40] = -inf;  // group 2
  xp[50] = inf;   // group 3: inf and NaN
  xp[51] = nan;
  for (int j = 64; j < 80; ++j) xp[j] = j % 2 ? -0.0f : 0.0f;  // group 4: zeros
  const Tensor dx = dev.upload(x);
  Tensor amax = host_scalar(cpu_, 0), damax = dev.empty({1}, DType::F32);
  cpu::tensor_amax(x, amax);
  cuda::tensor_amax(dx, damax);
  expect_same_bytes(amax, dev.download(damax), "tensor_amax with NaN");
  Tensor gamax = Tensor::empty(cpu_, {4, 8}, DType::F32), dgamax = dev.empty({4, 8}, DType::F32);
  cpu::group_amax(x, 16, gamax);
  cuda::group_amax(dx, 16, dgamax);
  expect_same_bytes(gamax, dev.download(dgamax), "group_amax with NaN/inf/zeros");
  for (DType fmt : kFormats) {
    for (Fp8Saturation sat : kSats) {
      Tensor codes = Tensor::empty(cpu_, x.shape(), fmt), scale_inv = Tensor::empty(cpu_, {4, 8}, DType::F32);
      Tensor dcodes = dev.empty(x.shape(), fmt), dscale_inv = dev.empty({4, 8}, DType::F32);
      cpu::quantize_per_group(x, 16, sat, codes, scale_inv);
      cuda::quantize_per_group(dx, 16, sat, dcodes, dscale_inv);
      expect_same_bytes(codes, dev.download(dcodes), "quantize_per_group codes with NaN/inf/zeros");
      expect_same_bytes(scale_inv, dev.download(dscale_inv), "quantize_per_group scales with NaN/inf/zeros");
      Tensor out = Tensor::empty(cpu_, x.shape(), DType::BF16), dout = dev.empty(x.shape(), DType::BF16);
      cpu::dequantize_per_group(codes, scale_inv, 16, out);
      cuda::dequantize_per_group(dcodes, dscale_inv, 16, dout);
      expect_same_bytes(out, dev.download(dout), "dequantize_per_group with NaN/inf/zeros");
      // Per tensor: a finite scale applied to NaN/inf inputs.
      const Tensor s = host_scalar(cpu_, 2.0f);
      Tensor pcodes = Tensor::empty(cpu_, x.shape(), fmt), dpcodes = dev.empty(x.shape(), fmt);
      cpu::quantize_per_tensor(x, s, sat, pcodes);
      cuda::quantize_per_tensor(dx, dev.upload(s), sat, dpcodes);
      expect_same_bytes(pcodes, dev.download(dpcodes), "quantize_per_tensor with NaN/inf");
    }
    // Scales from amax = 0, inf, NaN and a tiny subnormal amax.
    for (float a : {0.0f, inf, nan, 1e-45f}) {
      Tensor scale = host_scalar(cpu_, 0), scale_inv = host_scalar(cpu_, 0);
      Tensor dscale = dev.empty({1}, DType::F32), dscale_inv = dev.empty({1}, DType::F32);
      cpu::compute_scale(host_scalar(cpu_, a), fmt, scale, scale_inv);
      cuda::compute_scale(dev.upload(host_scalar(cpu_, a)), fmt, dscale, dscale_inv);
      expect_same_bytes(scale, dev.download(dscale), "compute_scale edge case");
      expect_same_bytes(scale_inv, dev.download(dscale_inv), "compute_scale edge case inv");
    }
  }
}

TEST_F(CudaQuantize, EmptyTensorAmaxIsZero) {
  const DeviceIo dev(gpu_, cpu_);
  Tensor damax = dev.upload(host_scalar(cpu_, 7.0f));
  cuda::tensor_amax(dev.empty({0, 16}, DType::BF16), damax);
  EXPECT_EQ(*dev.download(damax).data<float>(), 0.0f);
}

TEST_F(CudaQuantize, RejectsGroupSizeThatDoesNotDivideLastDim) {
  const DeviceIo dev(gpu_, cpu_);
  const Tensor dx = dev.empty({4, 100}, DType::F32);
  Tensor dcodes = dev.empty({4, 100}, DType::E4M3), dscale_inv = dev.empty({4, 6}, DType::F32);
  try {
    cuda::quantize_per_group(dx, 16, Fp8Saturation::Saturate, dcodes, dscale_inv);
    ADD_FAILURE() << "no exception";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("[quantize_per_group] group_size 16 does not divide"),
              std::string::npos)
        << e.what();
  }
}


// Not a test: quantize + transpose on a Llama-2-7B block's shapes (8192 tokens), the wide kernel (aligned
// input) beside the narrow one (the same input 4 elements into its storage: 8-byte aligned only) and a
// device copy of the same bytes (2 read + 2 written per element). Run with --gtest_also_run_disabled_tests
// --gtest_filter='*DISABLED_TransposeBandwidth'.
TEST_F(CudaQuantize, DISABLED_TransposeBandwidth) {
  std::printf("device: %s\n", static_cast<cuda::CudaContext&>(*gpu_).properties().str().c_str());
  const cudaStream_t stream = static_cast<cuda::CudaContext&>(*gpu_).stream();
  RandomGenerator gen{1, 0};
  for (const Shape& shape : {Shape{8192, 4096}, Shape{8192, 11008}, Shape{8192, 12288}, Shape{8192, 22016}}) {
    auto storage = std::make_shared<Storage>(gpu_, (shape_numel(shape) + 4) * 2, MemoryCategory::Other);
    Tensor flat = Tensor::from_storage(storage, {shape_numel(shape) + 4}, DType::BF16, 0);
    ops::normal_(flat, gen, 0.0f, 1.0f);
    const Tensor aligned = Tensor::from_storage(storage, shape, DType::BF16, 0);
    const Tensor offset = Tensor::from_storage(storage, shape, DType::BF16, 4);
    Tensor scale = ops::full(gpu_, {1}, 2.0, DType::F32);
    Tensor codes = Tensor::empty(gpu_, shape, DType::E4M3), codes_t = Tensor::empty(gpu_, {shape[1], shape[0]}, DType::E4M3);
    Tensor copy = Tensor::empty(gpu_, shape, DType::BF16);
    const auto time = [&](auto&& fn) { return test::median_ms(stream, 20, fn, /*warmups=*/3); };
    const double wide = time([&] { cuda::quantize_transpose_per_tensor(aligned, scale, Fp8Saturation::Saturate, codes, codes_t); });
    const double narrow = time([&] { cuda::quantize_transpose_per_tensor(offset, scale, Fp8Saturation::Saturate, codes, codes_t); });
    const double memcpy_ms = time([&] {
      COAT_CUDA_CHECK(cudaMemcpyAsync(copy.data_ptr(), aligned.data_ptr(), aligned.nbytes(), cudaMemcpyDeviceToDevice, stream));
    });
    const double gb = static_cast<double>(shape_numel(shape)) * 4.0 / 1e9;
    std::printf("[%6ld, %6ld] wide %.3f ms (%5.0f GB/s) | narrow %.3f ms (%5.0f GB/s) | copy %.3f ms (%5.0f GB/s) | "
                "wide %.2fx narrow\n",
                static_cast<long>(shape[0]), static_cast<long>(shape[1]), wide, gb / (wide * 1e-3), narrow,
                gb / (narrow * 1e-3), memcpy_ms, gb / (memcpy_ms * 1e-3), narrow / wide);
  }
}

#endif  // COAT_WITH_CUDA

}  // namespace
}  // namespace coat
