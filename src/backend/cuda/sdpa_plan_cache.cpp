// Caching cuDNN attention graphs by key.
#include "coat/backend/cuda/sdpa_plan_cache.h"

#include <bit>

#include "coat/core/error.h"

namespace coat::cuda {

std::string SdpaKey::str() const {
  return ::coat::detail::concat(
      backward ? "bwd" : "fwd", " b=", b, " tq=", tq, " tk=", tk, " hq=", hq, " hkv=", hkv, " dh=", dh,
      " scale=", std::bit_cast<float>(scale_bits), " deterministic=", deterministic ? 1 : 0,
      " token strides q=", q_ts, " k=", k_ts, " v=", v_ts, " o=", o_ts,
      backward ? ::coat::detail::concat(" dO=", do_ts, " dq=", dq_ts, " dk=", dk_ts, " dv=", dv_ts)
               : std::string());
}

size_t SdpaKeyHash::operator()(const SdpaKey& key) const {
  size_t h = 0;
  auto mix = [&h](uint64_t v) {
    h ^= std::hash<uint64_t>{}(v) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  };
  for (int64_t v : {key.b, key.tq, key.tk, key.hq, key.hkv, key.dh, key.q_ts, key.k_ts, key.v_ts, key.o_ts,
                    key.do_ts, key.dq_ts, key.dk_ts, key.dv_ts}) {
    mix(static_cast<uint64_t>(v));
  }
  mix(static_cast<uint64_t>(key.scale_bits) | (static_cast<uint64_t>(key.backward) << 32) |
      (static_cast<uint64_t>(key.deterministic) << 33));
  return h;
}

SdpaPlan& SdpaPlanCache::get(const SdpaKey& key, const std::function<std::unique_ptr<SdpaPlan>()>& build) {
  // Held while building: two threads asking for the same new key build it once. Building takes tens of
  // milliseconds and happens once per shape.
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  std::unique_ptr<SdpaPlan> plan = build();
  COAT_CHECK(plan != nullptr, CudnnError, "[attention] building the cuDNN graph for ", key.str(),
             " returned nothing");
  SdpaPlan& ref = *plan;
  plans_.emplace(key, std::move(plan));
  ++plans_built_;
  return ref;
}

uint64_t SdpaPlanCache::plans_built() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return plans_built_;
}

size_t SdpaPlanCache::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return plans_.size();
}

void SdpaPlanCache::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  plans_.clear();
}

}  // namespace coat::cuda
