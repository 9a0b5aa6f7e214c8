// CPU reference: embedding lookup (a row copy) and the sequential scatter-add of its backward.
#include "coat/backend/cpu/embedding.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "coat/backend/cpu/typed_storage.h"
#include "coat/core/float_formats.h"

namespace coat::cpu {
namespace {

template <typename F>
void dispatch_ids(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::I32:
      f(int32_t{});
      return;
    case DType::I64:
      f(int64_t{});
      return;
    default:
      COAT_CHECK(false, NotImplemented, "[", op, "] cpu: no kernel for ids of dtype ", dtype_name(t));
  }
}

/// Throws for the first id outside [0, vocab).
template <typename I>
void check_ids(const I* ids, int64_t n, int64_t vocab, const char* op) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids[i];
    COAT_ARG_CHECK(id >= 0 && id < vocab, op, "id ", id, " at position ", i,
                   " is outside [0, V) with V = ", vocab);
  }
}

template <typename S, typename G>
void scatter_add(const S* dy, const int64_t* rows, int64_t n, int64_t d, G* grad) {
  for (int64_t i = 0; i < n; ++i) {
    const S* src = dy + i * d;
    G* dst = grad + rows[i] * d;
    for (int64_t j = 0; j < d; ++j) dst[j] = static_cast<G>(dst[j] + widen(src[j]));
  }
}

}  // namespace

void embedding(const Tensor& weight, const Tensor& ids, Tensor& out) {
  const int64_t vocab = weight.size(0), d = weight.size(1), n = ids.numel();
  const size_t row_bytes = static_cast<size_t>(d) * dtype_size(weight.dtype());
  const auto* w = static_cast<const uint8_t*>(weight.data_ptr());
  auto* o = static_cast<uint8_t*>(out.data_ptr());
  dispatch_ids(ids.dtype(), "embedding", [&](auto id_type) {
    using I = decltype(id_type);
    const I* p = ids.data<I>();
    check_ids(p, n, vocab, "embedding");
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(o + static_cast<size_t>(i) * row_bytes, w + static_cast<size_t>(p[i]) * row_bytes,
                  row_bytes);
  });
}

void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dweight_accum) {
  const int64_t vocab = dweight_accum.size(0), d = dweight_accum.size(1), n = ids.numel();
  // The ids as int64 rows, all checked before the first write.
  std::vector<int64_t> rows(static_cast<size_t>(n));
  dispatch_ids(ids.dtype(), "embedding_backward", [&](auto id_type) {
    using I = decltype(id_type);
    const I* p = ids.data<I>();
    check_ids(p, n, vocab, "embedding_backward");
    for (int64_t i = 0; i < n; ++i) rows[i] = p[i];
  });
  dispatch_storage(dy.dtype(), "embedding_backward", [&](auto s) {
    using S = decltype(s);
    if (dweight_accum.dtype() == DType::F64) {
      scatter_add(dy.data<S>(), rows.data(), n, d, dweight_accum.data<double>());
    } else {
      scatter_add(dy.data<S>(), rows.data(), n, d, dweight_accum.data<float>());
    }
  });
}

}  // namespace coat::cpu
