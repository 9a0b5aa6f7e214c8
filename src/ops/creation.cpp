// Factories and fills: validation here, kernels in the backends.
#include "coat/ops/creation.h"

#include "coat/backend/cpu/copy.h"
#include "coat/ops/dispatch.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/copy.h"
#endif

namespace coat::ops {

void fill_(Tensor& t, double value) {
  COAT_ARG_CHECK(t.defined(), "fill", "undefined tensor");
  COAT_DISPATCH("fill", t.device(), cpu::fill(t, value), cuda::fill(t, value));
}

Tensor zeros(const ContextPtr& context, const Shape& shape, DType dtype, MemoryCategory category) {
  return full(context, shape, 0.0, dtype, category);
}

Tensor full(const ContextPtr& context, const Shape& shape, double value, DType dtype, MemoryCategory category) {
  Tensor t = Tensor::empty(context, shape, dtype, category);
  fill_(t, value);
  return t;
}

Tensor arange(const ContextPtr& context, int64_t count, DType dtype, double start, double step) {
  COAT_ARG_CHECK(count >= 0, "arange", "negative count ", count);
  Tensor t = Tensor::empty(context, {count}, dtype);
  COAT_DISPATCH("arange", t.device(), cpu::arange(t, start, step), cuda::arange(t, start, step));
  return t;
}

namespace {
void check_random_target(const Tensor& t, const char* op) {
  COAT_ARG_CHECK(t.defined(), op, "undefined tensor");
  COAT_ARG_CHECK(t.is_contiguous(), op, "tensor ", t.str(), " must be contiguous (element i uses counter i)");
  COAT_ARG_CHECK(is_floating(t.dtype()), op, "dtype ", dtype_name(t.dtype()), " is not a float type");
}
}  // namespace

void uniform_(Tensor& t, RandomGenerator& generator, float low, float high) {
  check_random_target(t, "uniform");
  COAT_ARG_CHECK(low <= high, "uniform", "low ", low, " > high ", high);
  const uint64_t offset = generator.take(static_cast<uint64_t>(t.numel()));
  COAT_DISPATCH("uniform", t.device(), cpu::fill_uniform(t, generator.seed, offset, low, high),
                cuda::fill_uniform(t, generator.seed, offset, low, high));
}

void normal_(Tensor& t, RandomGenerator& generator, float mean, float std) {
  check_random_target(t, "normal");
  COAT_ARG_CHECK(std >= 0.0f, "normal", "negative std ", std);
  const uint64_t offset = generator.take(static_cast<uint64_t>(t.numel()));
  COAT_DISPATCH("normal", t.device(), cpu::fill_normal(t, generator.seed, offset, mean, std),
                cuda::fill_normal(t, generator.seed, offset, mean, std));
}

}  // namespace coat::ops
