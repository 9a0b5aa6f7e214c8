// Cached cuDNN scaled-dot-product-attention graphs: built once per problem key (direction, shapes, scale,
// options) and reused by every later call with the same key. One cache per CudaContext (the graphs belong
// to that context's cuDNN handle). The graph type itself lives behind SdpaPlan, so this header (and
// cuda_context.h) stays free of cudnn-frontend: only src/backend/cuda/attention.cpp includes it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace coat::cuda {

/// Everything that changes the graph. Shapes are per the op API: q [b, tq, hq, dh], k and v [b, tk, hkv, dh],
/// each token-strided (coat/backend/token_strided.h): element stride 1, head stride dh, batch stride
/// t * (token stride). The token strides are part of the key (h * dh when contiguous; (hq + 2 hkv) * dh for
/// views of a packed projection).
struct SdpaKey {
  bool backward = false;
  int64_t b = 0, tq = 0, tk = 0, hq = 0, hkv = 0, dh = 0;
  uint32_t scale_bits = 0;     ///< the attention scale (float), bit pattern
  bool deterministic = false;  ///< backward only: cuDNN's deterministic algorithm
  /// Token strides (elements) of q, k, v, o; of dO, dq, dk, dv in a backward key (0 in a forward key).
  int64_t q_ts = 0, k_ts = 0, v_ts = 0, o_ts = 0, do_ts = 0, dq_ts = 0, dk_ts = 0, dv_ts = 0;

  bool operator==(const SdpaKey&) const = default;
  /// "bwd b=2 tq=128 tk=128 hq=8 hkv=2 dh=64 scale=0.125 deterministic=0 token strides q=512 k=128 v=128
  /// o=512 dO=512 dq=512 dk=128 dv=128".
  std::string str() const;
};

struct SdpaKeyHash {
  size_t operator()(const SdpaKey& key) const;
};

/// A built graph with what running it needs; the concrete type is defined where cudnn-frontend is included.
class SdpaPlan {
 public:
  virtual ~SdpaPlan() = default;
};

class SdpaPlanCache {
 public:
  SdpaPlanCache() = default;
  SdpaPlanCache(const SdpaPlanCache&) = delete;
  SdpaPlanCache& operator=(const SdpaPlanCache&) = delete;

  /// The plan for `key`; on first use it is made by `build` (which may throw: nothing is cached then).
  /// Plans are never evicted, so the reference stays valid until clear() or the cache dies.
  SdpaPlan& get(const SdpaKey& key, const std::function<std::unique_ptr<SdpaPlan>()>& build);
  /// How many plans were built so far (a repeated call with a known key builds none).
  uint64_t plans_built() const;
  size_t size() const;
  void clear();

 private:
  mutable std::mutex mutex_;
  std::unordered_map<SdpaKey, std::unique_ptr<SdpaPlan>, SdpaKeyHash> plans_;
  uint64_t plans_built_ = 0;
};

}  // namespace coat::cuda
