// CUDA kernels of the compressed optimizer moments, the fused AdamW step: one launch of persistent blocks
// over the whole flat buffer (tiles of whole groups, double-buffered group metadata in shared memory).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/launch.h"
#include "quantized_adamw_internal.cuh"

namespace coat::cuda::qadamw {
namespace {

/// 512 threads per block and tiles of 4096 elements: measured on an H100 (fp8_expand, 0.81B parameters),
/// 128 threads 6.12 ms, 256 threads 5.88 ms, 512 threads 5.76 ms: per tile the block waits at two barriers
/// while a few threads compute the groups' metadata, so larger tiles wait less per element.
constexpr int kThreads = 512;
constexpr int kVec = 4;                     // contiguous elements per thread and slot
constexpr int kSlots = 2;                   // slots per thread and tile
constexpr int kSlotSpan = kThreads * kVec;  // 2048 elements
constexpr int kTile = kSlotSpan * kSlots;   // 4096 elements per tile, whole groups
constexpr int64_t kMinFastGroup = 32;       // smaller groups take the general path (shared memory per block)
constexpr int kMaxTileGroups = kTile / kMinFastGroup;
/// StepArgs::maxima: one per warp and slot (32 lanes x kVec contiguous elements), ops::kStepMaximaGranule.
constexpr int64_t kMaximaGranule = 32 * kVec;
/// Resident blocks per SM the fused kernel is compiled for: 32 warps per SM, so at most 64 registers (no spill
/// in the whole-tile kernels). Fewer warps with more registers was slower (H100, 0.81B parameters, 128-thread
/// blocks: 6 per SM 6.74 ms against 8 per SM 6.28 ms).
constexpr int kFusedBlocksPerSM = 1024 / kThreads;

// ---- arguments ----

struct MomentArgs {
  void* codes = nullptr;
  float* scale = nullptr;
  float* expo = nullptr;
  float* center = nullptr;
  int group_shift = 0;  // log2(group_size) (the fast path's power-of-two groups)
  ExpandTableView tables;  // the expansion's tables of the moment's FP8 format
};

struct StepArgs {
  float* param = nullptr;
  const float* grad = nullptr;
  int64_t n = 0;
  MomentArgs m, v;
  AdamWScalars scalars;     // with weight decay
  float no_decay = 1.0f;    // the `decay` factor without weight decay (1)
  uint16_t* compute = nullptr;  // optional BF16 copy of the updated param (mixed-precision compute weights)
  const int32_t* skip = nullptr;  // optional device flag: non-zero -> the step writes nothing
  float* maxima = nullptr;  // optional: max |param| after the update per kMaximaGranule elements
  bool vectorized = false;  // 16-byte loads of grad / param, 4-code loads of the codes
  bool prefetch = false;    // every base pointer 16-byte aligned: bulk L2 prefetch of the next tile
};

// ---- small device helpers ----

template <typename T>
struct Vec4;
template <>
struct Vec4<float> {
  using type = float4;
};
template <>
struct Vec4<uint16_t> {
  using type = ushort4;
};
template <>
struct Vec4<uint8_t> {
  using type = uchar4;
};

/// Elements [e, e + count) (count <= 4) into out, one vector load when `vec` and count == 4; the rest 0.
template <typename T>
__device__ __forceinline__ void load4(const T* p, int64_t e, int count, bool vec, T (&out)[kVec]) {
  if (vec && count == kVec) {
    const auto x = __ldcs(reinterpret_cast<const typename Vec4<T>::type*>(p + e));
    out[0] = x.x;
    out[1] = x.y;
    out[2] = x.z;
    out[3] = x.w;
  } else {
#pragma unroll
    for (int q = 0; q < kVec; ++q) out[q] = q < count ? p[e + q] : T(0);
  }
}

template <typename T>
__device__ __forceinline__ void store4(T* p, int64_t e, int count, bool vec, const T (&in)[kVec]) {
  if (vec && count == kVec) {
    typename Vec4<T>::type x;
    x.x = in[0];
    x.y = in[1];
    x.z = in[2];
    x.w = in[3];
    __stcs(reinterpret_cast<typename Vec4<T>::type*>(p + e), x);
  } else {
#pragma unroll
    for (int q = 0; q < kVec; ++q)
      if (q < count) p[e + q] = in[q];
  }
}

/// A slot's kVec codes. 1-byte codes stay packed in one word until each is decoded: four live registers
/// fewer per slot (the register allocator spilled unpacked bytes at 64 registers).
template <typename T>
struct SlotCodes {
  T v[kVec];
  __device__ __forceinline__ T at(int q) const { return v[q]; }
};
template <>
struct SlotCodes<uint8_t> {
  uint32_t word;
  __device__ __forceinline__ uint8_t at(int q) const { return static_cast<uint8_t>(word >> (8 * q)); }
};

template <typename T>
__device__ __forceinline__ void load_codes(const T* p, int64_t e, int count, bool vec, SlotCodes<T>& out) {
  if constexpr (sizeof(T) == 1) {
    if (vec && count == kVec) {
      out.word = __ldcs(reinterpret_cast<const unsigned int*>(p + e));
    } else {
      uint32_t w = 0u;
#pragma unroll
      for (int q = 0; q < kVec; ++q)
        if (q < count) w |= static_cast<uint32_t>(p[e + q]) << (8 * q);
      out.word = w;
    }
  } else {
    load4(p, e, count, vec, out.v);
  }
}
__device__ __forceinline__ uint32_t umax(uint32_t a, uint32_t b) {
  return a > b ? a : b;
}
__device__ __forceinline__ uint32_t umin(uint32_t a, uint32_t b) {
  return a < b ? a : b;
}
__device__ __forceinline__ float approx_log2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float approx_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/// The expansion's encode, the codes of moment_codec::encode_expand: guess the magnitude code with the
/// hardware's approximate log2 / exp2 and FP8 conversion (k log2|x| + a = log2(y / s)) and keep it when |x|
/// lies between its two bounds (one 8-byte load of the row's pair; then the guess IS the count of bounds below
/// |x|); else count by binary search as the CPU does (a guess off by one next to a bound, collapsed bounds of
/// a tiny group, every nonzero value of a non-finite group, whose guess is the NaN code with NaN bounds).
template <DType Fmt>
__device__ __forceinline__ uint8_t encode_expand_fast(float x, const GroupCoder& c, const BoundPair* pairs,
                                                      uint32_t row) {
  const float ax = bits_to_float(float_to_bits(x) & 0x7FFFFFFFu);
  const float z = approx_exp2(fmaf(c.k, approx_log2(ax), c.a));
  const uint32_t guess = static_cast<uint32_t>(fp8_saturate<Fmt>(z)) & 0x7Fu;  // z >= 0 or NaN (-> 0x7F)
  const float2 b = __ldg(reinterpret_cast<const float2*>(pairs) + (row | guess));
  const bool inside = ax >= __fmul_rn(c.f, b.x) && ax < __fmul_rn(c.f, b.y);
  uint32_t magnitude = guess;
  if (!inside && ax != 0.0f) magnitude = expand_count<Fmt>(ax, c.f, pairs + row);
  return expand_code(x, magnitude, c);
}

/// A slot's codes of a grouped codec.
template <Codec C, typename T>
__device__ __forceinline__ void encode_slot(const float (&x)[kVec], const GroupCoder& c, const BoundPair* pairs,
                                            T (&out)[kVec]) {
  if constexpr (is_expand(C)) {
    const uint32_t row = table_offset(c.k);
#pragma unroll
    for (int q = 0; q < kVec; ++q) out[q] = static_cast<T>(encode_expand_fast<fp8_format(C)>(x[q], c, pairs, row));
  } else {
#pragma unroll
    for (int q = 0; q < kVec; ++q) out[q] = static_cast<T>(encode_plain<fp8_format(C)>(x[q], c.a));
  }
}
/// Reduces the statistics of a thread's `count` new values over the lanes holding one group (width lanes,
/// a power of two <= 32, aligned) and merges them into the tile's shared-memory statistics of that group.
__device__ __forceinline__ void reduce_group_stats(const float (&x)[kVec], int count, int width, int group,
                                                   uint32_t* smax, uint32_t* smin) {
  uint32_t mx = 0u, mn = 0xFFFFFFFFu;
#pragma unroll
  for (int q = 0; q < kVec; ++q) {
    if (q < count) {
      const uint32_t key = fp8math::amax_key(x[q]);
      mx = umax(mx, key);
      mn = umin(mn, masked_min_key(key));
    }
  }
  if (width == 32) {
    mx = __reduce_max_sync(kFullMask, mx);
    mn = __reduce_min_sync(kFullMask, mn);
  } else {
    for (int offset = 1; offset < width; offset <<= 1) {
      mx = umax(mx, __shfl_xor_sync(kFullMask, mx, offset));
      mn = umin(mn, __shfl_xor_sync(kFullMask, mn, offset));
    }
  }
  // The first lane of a segment holds its lowest elements: if it has none, no lane of the segment has.
  if ((threadIdx.x & (width - 1)) == 0 && count > 0) {
    atomicMax(smax + group, mx);
    atomicMin(smin + group, mn);
  }
}

// ---- the fused step, one launch ----

/// The block's shared memory: the inline decay ranges, and per group of a tile its statistics and coders
/// (GroupCoder a, f, k), twice ([buffer]): while the block encodes tile i with the encoders in buffer i % 2,
/// the decoders of its next tile wait in the other buffer.
template <Codec CM, Codec CV>
struct TileShared {
  static constexpr int kNGM = is_grouped(CM) ? kMaxTileGroups : 1;
  static constexpr int kNGV = is_grouped(CV) ? kMaxTileGroups : 1;
  uint32_t max_m[2][kNGM], min_m[2][kNGM], max_v[2][kNGV], min_v[2][kNGV];
  float ca_m[2][kNGM], cb_m[2][kNGM], cc_m[2][kNGM], ca_v[2][kNGV], cb_v[2][kNGV], cc_v[2][kNGV];
  float stage_m[3][kNGM], stage_v[3][kNGV];  // the next tile's stored metadata (scale, expo, center), copied
                                            // asynchronously while this tile is updated
  int64_t range_begin[kInlineDecayRanges], range_end[kInlineDecayRanges];
  int tile_ranges[2][2];  // [buffer]: the decay ranges [lo, hi) that meet the tile
  int tile_decay[2];      // [buffer]: 0 no element of the tile decays, 1 all do, 2 mixed (search per slot)
};

/// Where a tile lies: its first element, its length, and its groups of each moment.
struct TileGeom {
  int64_t base = 0;
  int valid = 0;
  int groups_m = 0, groups_v = 0;
  int64_t first_m = 0, first_v = 0;
};

template <Codec CM, Codec CV>
__device__ __forceinline__ TileGeom tile_geom(const StepArgs& a, int64_t tile) {
  TileGeom t;
  t.base = tile * kTile;
  t.valid = static_cast<int>(min(int64_t{kTile}, a.n - t.base));
  if constexpr (is_grouped(CM)) {
    t.groups_m = (t.valid + (1 << a.m.group_shift) - 1) >> a.m.group_shift;
    t.first_m = t.base >> a.m.group_shift;
  }
  if constexpr (is_grouped(CV)) {
    t.groups_v = (t.valid + (1 << a.v.group_shift) - 1) >> a.v.group_shift;
    t.first_v = t.base >> a.v.group_shift;
  }
  return t;
}

/// Hint: bring [p, p + bytes) into L2 (Hopper bulk prefetch; p 16-byte aligned, bytes rounded down to 16).
__device__ __forceinline__ void prefetch_l2(const void* p, int64_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const uint32_t b = static_cast<uint32_t>(bytes) & ~15u;
  if (b > 0) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(b) : "memory");
#else
  (void)p;
  (void)bytes;
#endif
}

/// max |p| over a warp's slot (lane l holds elements e0 .. e0 + count - 1, e0 = first + kVec * l), one granule
/// of kMaximaGranule elements starting at the first lane's e0 (a multiple of kMaximaGranule): lane 0 stores it,
/// when the granule has elements. Every lane of the warp calls it (a full-warp reduction).
__device__ __forceinline__ void store_granule_max(float* maxima, int64_t e0, int count, const float (&p)[kVec]) {
  uint32_t key = 0u;
#pragma unroll
  for (int q = 0; q < kVec; ++q)
    if (q < count) key = fp8math::max_key(key, fp8math::amax_key(p[q]));
  key = __reduce_max_sync(kFullMask, key);
  if ((threadIdx.x & 31) == 0 && count > 0) maxima[e0 / kMaximaGranule] = fp8math::amax_from_key(key);
}

/// 4 bytes global -> shared without a register (cp.async; completed by wait_async_copies).
__device__ __forceinline__ void copy_async4(float* shared_dst, const float* src) {
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(shared_dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(d), "l"(src) : "memory");
}
/// Waits for this thread's cp.async copies (visible to the block after the next barrier).
__device__ __forceinline__ void wait_async_copies() {
  asm volatile("cp.async.wait_all;" ::: "memory");
}

/// Starts copying the stored metadata of `count` groups of a moment from group `first` into stage[0..2]
/// (scale; expo and center for the expansion), by the threads [0, blockDim.x).
template <Codec C, int N>
__device__ __forceinline__ void stage_groups(const MomentArgs& ma, int64_t first, int count, float (&stage)[3][N]) {
  if constexpr (is_grouped(C)) {
    constexpr int kArrays = is_expand(C) ? 3 : 1;
    for (int i = threadIdx.x; i < kArrays * count; i += blockDim.x) {
      const int which = i >= count ? (i >= 2 * count ? 2 : 1) : 0;
      const int j = i - which * count;
      const float* src = which == 0 ? ma.scale : which == 1 ? ma.expo : ma.center;
      copy_async4(&stage[which][j], src + first + j);
    }
  }
}

/// Decoders of the stored metadata (staged) and empty statistics for a tile's groups of one moment (group i of
/// the tile by worker i % workers).
template <Codec C, int N>
__device__ __forceinline__ void prepare_groups(const float (&stage)[3][N], int count, int worker, int workers,
                                               uint32_t* smax, uint32_t* smin, float* ca, float* cb, float* cc) {
  for (int i = worker; i < count; i += workers) {
    smax[i] = 0u;
    smin[i] = 0xFFFFFFFFu;
    const GroupCoder c = group_coder<C>(load_meta<C>(stage[0], stage[1], stage[2], i));
    ca[i] = c.a;
    cb[i] = c.f;
    cc[i] = c.k;
  }
}

/// New metadata from the statistics (stored) and its encoders, for a tile's groups of one moment.
template <Codec C>
__device__ __forceinline__ void finish_groups(const MomentArgs& ma, int64_t first, int count, int worker,
                                              int workers, const uint32_t* smax, const uint32_t* smin,
                                              float* ca, float* cb, float* cc) {
  for (int i = worker; i < count; i += workers) {
    GroupStats st;
    st.max_key = smax[i];
    st.min_key = smin[i];
    GroupMeta meta;
    const GroupCoder c = group_meta_coder<C>(st, meta);
    store_meta<C>(ma.scale, ma.expo, ma.center, first + i, meta);
    ca[i] = c.a;
    cb[i] = c.f;
    cc[i] = c.k;
  }
}

/// Both moments expanded (the FP8 formats may differ): one pass of the long per-group code over the groups of
/// both, m groups first.
template <Codec CM, Codec CV>
__device__ __forceinline__ void prepare_groups_merged(const StepArgs& a, const TileGeom& t,
                                                      TileShared<CM, CV>& sh, int b, int worker,
                                                      int workers) {
  for (int i = worker; i < t.groups_m + t.groups_v; i += workers) {
    const bool is_m = i < t.groups_m;
    const int j = is_m ? i : i - t.groups_m;
    (is_m ? sh.max_m[b] : sh.max_v[b])[j] = 0u;
    (is_m ? sh.min_m[b] : sh.min_v[b])[j] = 0xFFFFFFFFu;
    const GroupCoder c =
        expand_coder(is_m ? load_meta<CM>(sh.stage_m[0], sh.stage_m[1], sh.stage_m[2], j)
                          : load_meta<CV>(sh.stage_v[0], sh.stage_v[1], sh.stage_v[2], j),
                     is_m ? fp8_format(CM) : fp8_format(CV));
    (is_m ? sh.ca_m[b] : sh.ca_v[b])[j] = c.a;
    (is_m ? sh.cb_m[b] : sh.cb_v[b])[j] = c.f;
    (is_m ? sh.cc_m[b] : sh.cc_v[b])[j] = c.k;
  }
}

template <Codec CM, Codec CV>
__device__ __forceinline__ void finish_groups_merged(const StepArgs& a, const TileGeom& t,
                                                     TileShared<CM, CV>& sh, int b, int worker, int workers) {
  for (int i = worker; i < t.groups_m + t.groups_v; i += workers) {
    const bool is_m = i < t.groups_m;
    const int j = is_m ? i : i - t.groups_m;
    const MomentArgs& ma = is_m ? a.m : a.v;
    GroupStats st;
    st.max_key = (is_m ? sh.max_m[b] : sh.max_v[b])[j];
    st.min_key = (is_m ? sh.min_m[b] : sh.min_v[b])[j];
    GroupMeta meta;
    const GroupCoder c = group_meta_coder<true>(st, is_m ? fp8_format(CM) : fp8_format(CV), meta);
    store_meta<CM>(ma.scale, ma.expo, ma.center, (is_m ? t.first_m : t.first_v) + j, meta);
    (is_m ? sh.ca_m[b] : sh.ca_v[b])[j] = c.a;
    (is_m ? sh.cb_m[b] : sh.cb_v[b])[j] = c.f;
    (is_m ? sh.cc_m[b] : sh.cc_v[b])[j] = c.k;
  }
}

/// Starts staging tile t's stored metadata (stage_tile), all threads.
template <Codec CM, Codec CV>
__device__ __forceinline__ void stage_tile(const StepArgs& a, TileShared<CM, CV>& sh, const TileGeom& t) {
  stage_groups<CM>(a.m, t.first_m, t.groups_m, sh.stage_m);
  stage_groups<CV>(a.v, t.first_v, t.groups_v, sh.stage_v);
}

/// Decoders (from the staged metadata), empty statistics and decay ranges of tile t into buffer b, by the
/// threads [worker0, worker0 + workers).
template <Codec CM, Codec CV>
__device__ __forceinline__ void prepare_tile(const StepArgs& a, const DecayArgs& d, TileShared<CM, CV>& sh,
                                             int b, const TileGeom& t, const int64_t* rb, const int64_t* re,
                                             bool use_ranges, int worker0, int workers) {
  const int w = static_cast<int>(threadIdx.x) - worker0;
  if (w < 0 || w >= workers) return;
  if constexpr (is_expand(CM) && is_expand(CV)) {
    prepare_groups_merged<CM, CV>(a, t, sh, b, w, workers);
  } else {
    if constexpr (is_grouped(CM))
      prepare_groups<CM>(sh.stage_m, t.groups_m, w, workers, sh.max_m[b], sh.min_m[b], sh.ca_m[b], sh.cb_m[b],
                         sh.cc_m[b]);
    if constexpr (is_grouped(CV))
      prepare_groups<CV>(sh.stage_v, t.groups_v, w, workers, sh.max_v[b], sh.min_v[b], sh.ca_v[b], sh.cb_v[b],
                         sh.cc_v[b]);
  }
  if (use_ranges && w == workers - 1) {
    const int lo = first_ending_after(re, 0, d.count, t.base);
    const int hi = first_beginning_from(rb, lo, d.count, t.base + t.valid);
    sh.tile_ranges[b][0] = lo;
    sh.tile_ranges[b][1] = hi;
    sh.tile_decay[b] = hi == lo ? 0 : hi == lo + 1 && rb[lo] <= t.base && re[lo] >= t.base + t.valid ? 1 : 2;
  }
}

/// One tile, its per-group state in buffer b (prepared before):
///  A. cp.async copies of the next tile's stored metadata into shared memory start (no registers; waited
///     for before the first barrier); loads of grad, param and codes (1-byte codes stay packed);
///  B. decode (expansion: f * T_r[|q|] from the table row in L1), update (param stored), new moments kept in
///     registers; statistics reduced over each group's lanes (redux / shuffles) and merged into shared
///     memory with atomics (exact, order-free);
///  C. new metadata (stored) and coders of this tile's groups into buffer b, by the first half of the block;
///     at the same time the second half prepares the block's next tile (coders from its staged metadata,
///     empty statistics, decay ranges and whether the tile decays wholly, not at all or in part) in buffer
///     b ^ 1;
///  D. encode (expansion: a hardware guess checked against its two bounds) and store the codes.
/// Two barriers per tile (after B and after C); D of this tile and B of the next use different buffers.
/// kFull: a whole, vector-aligned tile (no per-element bounds).
template <Codec CM, Codec CV, bool kFull>
__device__ __forceinline__ void fused_tile(const StepArgs& a, const DecayArgs& d, TileShared<CM, CV>& sh,
                                           int b, const TileGeom& t, bool has_next, const TileGeom& next,
                                           const int64_t* rb, const int64_t* re, bool use_ranges, int width_m,
                                           int width_v) {
  constexpr bool kGM = is_grouped(CM), kGV = is_grouped(CV);
  using TM = code_t<CM>;
  using TV = code_t<CV>;
  const int tid = threadIdx.x;
  // The last, partial tile moves element by element: with vector accesses under a per-thread guard
  // (count == kVec), threads past the end read past the buffer on the H100 (memcheck of a 786,944-element unit).
  const bool vec = kFull;
  const int64_t base = t.base;

  // A. the next tile's metadata (asynchronous copies, waited for before the barrier), loads
  if (has_next) stage_tile<CM, CV>(a, sh, next);
  float g[kSlots][kVec], p[kSlots][kVec];
  SlotCodes<TM> cm[kSlots];
  SlotCodes<TV> cv[kSlots];
  int count[kSlots];
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    const int offset = s * kSlotSpan + tid * kVec;
    count[s] = kFull ? kVec : max(0, min(kVec, t.valid - offset));
    const int64_t e = base + offset;
    load4(a.grad, e, count[s], vec, g[s]);
    load4(a.param, e, count[s], vec, p[s]);
    load_codes(static_cast<const TM*>(a.m.codes), e, count[s], vec, cm[s]);
    load_codes(static_cast<const TV*>(a.v.codes), e, count[s], vec, cv[s]);
  }

  // B. decode, update, statistics
  float mn[kSlots][kVec], vn[kSlots][kVec];
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    const int offset = s * kSlotSpan + tid * kVec;
    const int64_t e0 = base + offset;
    GroupCoder dm, dv;
    uint32_t row_m = 0u, row_v = 0u;
    const int local_m = kGM ? offset >> a.m.group_shift : 0;
    const int local_v = kGV ? offset >> a.v.group_shift : 0;
    if constexpr (kGM) dm = GroupCoder{sh.ca_m[b][local_m], sh.cb_m[b][local_m], sh.cc_m[b][local_m]};
    if constexpr (kGV) dv = GroupCoder{sh.ca_v[b][local_v], sh.cb_v[b][local_v], sh.cc_v[b][local_v]};
    if constexpr (is_expand(CM)) row_m = table_offset(dm.k);
    if constexpr (is_expand(CV)) row_v = table_offset(dv.k);
    bool decays[kVec];
    const int tile_decay = kGM || kGV ? sh.tile_decay[b] : 2;
    if (use_ranges && tile_decay != 2) {
#pragma unroll
      for (int q = 0; q < kVec; ++q) decays[q] = tile_decay == 1;
    } else if (use_ranges) {
      // Without grouped moments there are no barriers: search all ranges instead of the tile's.
      const int lo = kGM || kGV ? sh.tile_ranges[b][0] : 0;
      const int hi = kGM || kGV ? sh.tile_ranges[b][1] : d.count;
      int r = first_ending_after(re, lo, hi, e0);
      if (r >= hi || re[r] >= e0 + kVec) {  // the slot meets at most range r
        const int64_t begin = r < hi ? rb[r] : INT64_MAX;
#pragma unroll
        for (int q = 0; q < kVec; ++q) decays[q] = begin <= e0 + q;
      } else {
#pragma unroll
        for (int q = 0; q < kVec; ++q) {
          while (r < hi && re[r] <= e0 + q) ++r;
          decays[q] = r < hi && rb[r] <= e0 + q;
        }
      }
    } else {
#pragma unroll
      for (int q = 0; q < kVec; ++q) decays[q] = d.all != 0;
    }
#pragma unroll
    for (int q = 0; q < kVec; ++q) {
      const bool valid = kFull || q < count[s];
      mn[s][q] = valid ? decode_code<CM>(cm[s].at(q), dm, a.m.tables.values, row_m) : 0.0f;
      vn[s][q] = valid ? decode_code<CV>(cv[s].at(q), dv, a.v.tables.values, row_v) : 0.0f;
    }
#pragma unroll
    for (int q = 0; q < kVec; ++q) {
      if (kFull || q < count[s]) {
        AdamWScalars sc = a.scalars;
        sc.decay = decays[q] ? a.scalars.decay : a.no_decay;
        adamw_math::adamw_update_for<uses_folded_update(CM, CV)>(p[s][q], g[s][q], mn[s][q], vn[s][q], sc);
      }
    }
    store4(a.param, e0, count[s], vec, p[s]);
    if (a.maxima != nullptr) store_granule_max(a.maxima, e0, count[s], p[s]);
    if (a.compute != nullptr) {
      uint16_t w[kVec];
#pragma unroll
      for (int q = 0; q < kVec; ++q) w[q] = float_to_bf16(p[s][q]);
      store4(a.compute, e0, count[s], vec, w);
    }
    if constexpr (kGM) {
      reduce_group_stats(mn[s], count[s], width_m, local_m, sh.max_m[b], sh.min_m[b]);
    } else {
      TM out[kVec];
#pragma unroll
      for (int q = 0; q < kVec; ++q) out[q] = store_plain<CM>(mn[s][q]);
      store4(static_cast<TM*>(a.m.codes), e0, count[s], vec, out);
    }
    if constexpr (kGV) {
      reduce_group_stats(vn[s], count[s], width_v, local_v, sh.max_v[b], sh.min_v[b]);
    } else {
      TV out[kVec];
#pragma unroll
      for (int q = 0; q < kVec; ++q) out[q] = store_plain<CV>(vn[s][q]);
      store4(static_cast<TV*>(a.v.codes), e0, count[s], vec, out);
    }
  }
  if constexpr (!kGM && !kGV) return;

  wait_async_copies();
  __syncthreads();
  // C. this tile's encoders (first half of the block) and the next tile's decoders (second half)
  constexpr int kHalf = kThreads / 2;
  if (tid < kHalf) {
    if constexpr (is_expand(CM) && is_expand(CV)) {
      finish_groups_merged<CM, CV>(a, t, sh, b, tid, kHalf);
    } else if constexpr (kGM && kGV) {  // m on the first quarter, v on the second
      constexpr int kQuarter = kThreads / 4;
      if (tid < kQuarter) {
        finish_groups<CM>(a.m, t.first_m, t.groups_m, tid, kQuarter, sh.max_m[b], sh.min_m[b], sh.ca_m[b],
                          sh.cb_m[b], sh.cc_m[b]);
      } else {
        finish_groups<CV>(a.v, t.first_v, t.groups_v, tid - kQuarter, kQuarter, sh.max_v[b], sh.min_v[b],
                          sh.ca_v[b], sh.cb_v[b], sh.cc_v[b]);
      }
    } else if constexpr (kGM) {
      finish_groups<CM>(a.m, t.first_m, t.groups_m, tid, kHalf, sh.max_m[b], sh.min_m[b], sh.ca_m[b],
                        sh.cb_m[b], sh.cc_m[b]);
    } else if constexpr (kGV) {
      finish_groups<CV>(a.v, t.first_v, t.groups_v, tid, kHalf, sh.max_v[b], sh.min_v[b], sh.ca_v[b],
                        sh.cb_v[b], sh.cc_v[b]);
    }
  } else if (has_next) {
    prepare_tile<CM, CV>(a, d, sh, b ^ 1, next, rb, re, use_ranges, kHalf, kHalf);
  }
  __syncthreads();
  // D. encode
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    const int offset = s * kSlotSpan + tid * kVec;
    const int64_t e0 = base + offset;
    if (!kFull && count[s] == 0) continue;
    if constexpr (kGM) {
      const int l = offset >> a.m.group_shift;
      const GroupCoder c{sh.ca_m[b][l], sh.cb_m[b][l], sh.cc_m[b][l]};
      TM out[kVec];
      encode_slot<CM>(mn[s], c, a.m.tables.pairs, out);
      store4(static_cast<TM*>(a.m.codes), e0, count[s], vec, out);
    }
    if constexpr (kGV) {
      const int l = offset >> a.v.group_shift;
      const GroupCoder c{sh.ca_v[b][l], sh.cb_v[b][l], sh.cc_v[b][l]};
      TV out[kVec];
      encode_slot<CV>(vn[s], c, a.v.tables.pairs, out);
      store4(static_cast<TV*>(a.v.codes), e0, count[s], vec, out);
    }
  }
}

/// Persistent blocks over the tiles [tile_begin, tile_end) of kTile elements (whole groups), fused_tile per
/// tile; lanes of warp 0 prefetch the block's next tile into L2 first. Memory traffic: grad, param, codes and
/// metadata read once; param, codes and metadata written once. kFull: every tile whole and vector-aligned
/// (the launch gives a buffer's last, partial tile to a separate one-block launch, so that this kernel has
/// only the straight-line tile code: with both in one kernel the register allocator spilled at 64 registers).
template <Codec CM, Codec CV, bool kFull>
__global__ __launch_bounds__(kThreads,
                             kFusedBlocksPerSM) void fused_step_kernel(const StepArgs a,
                                                                       const __grid_constant__ DecayArgs d,
                                                                       int64_t tile_begin, int64_t tile_end) {
  constexpr bool kGM = is_grouped(CM), kGV = is_grouped(CV);
  __shared__ TileShared<CM, CV> sh;
  // A skipped step (the flag was set by an earlier launch on this stream): every thread of every block
  // reads the same word and leaves before any barrier or write.
  if (a.skip != nullptr && *a.skip != 0) return;
  const int tid = threadIdx.x;
  const bool use_ranges = !d.all && d.count > 0;
  const bool inline_ranges = d.count <= kInlineDecayRanges;
  if (use_ranges && inline_ranges) {
    for (int i = tid; i < d.count; i += kThreads) {
      sh.range_begin[i] = d.inline_begin[i];
      sh.range_end[i] = d.inline_end[i];
    }
  }
  const int64_t* rb = inline_ranges ? sh.range_begin : d.begin;
  const int64_t* re = inline_ranges ? sh.range_end : d.end;
  const int width_m = kGM ? static_cast<int>(min(int64_t{32}, (int64_t{1} << a.m.group_shift) / kVec)) : 1;
  const int width_v = kGV ? static_cast<int>(min(int64_t{32}, (int64_t{1} << a.v.group_shift) / kVec)) : 1;

  if (tile_begin + blockIdx.x >= tile_end) return;
  __syncthreads();  // the ranges (prepare_tile searches them)
  TileGeom t = tile_geom<CM, CV>(a, tile_begin + blockIdx.x);
  if constexpr (kGM || kGV) {
    stage_tile<CM, CV>(a, sh, t);
    wait_async_copies();
    __syncthreads();  // the first tile's metadata
    prepare_tile<CM, CV>(a, d, sh, 0, t, rb, re, use_ranges, 0, kThreads);
    __syncthreads();  // the first tile's decoders, statistics and ranges
  }
  int b = 0;
  for (int64_t tile = tile_begin + blockIdx.x; tile < tile_end; tile += gridDim.x, b ^= 1) {
    const int64_t next_tile = tile + gridDim.x;
    const bool has_next = next_tile < tile_end;
    const TileGeom next = has_next ? tile_geom<CM, CV>(a, next_tile) : TileGeom{};
    if (a.prefetch && tid < 4 && has_next) {
      const int64_t count = next.valid;
      const int64_t e = next.base;
      if (tid == 0) prefetch_l2(a.grad + e, 4 * count);
      if (tid == 1) prefetch_l2(a.param + e, 4 * count);
      if (tid == 2)
        prefetch_l2(static_cast<const char*>(a.m.codes) + e * sizeof(code_t<CM>), sizeof(code_t<CM>) * count);
      if (tid == 3)
        prefetch_l2(static_cast<const char*>(a.v.codes) + e * sizeof(code_t<CV>), sizeof(code_t<CV>) * count);
    }
    fused_tile<CM, CV, kFull>(a, d, sh, b, t, has_next, next, rb, re, use_ranges, width_m, width_v);
    t = next;
  }
}

// ---- host side ----

bool aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

int log2_exact(int64_t x) {
  int s = 0;
  while ((int64_t{1} << s) < x) ++s;
  return s;
}

MomentArgs moment_args(const MomentBuffers& b) {
  MomentArgs a;
  a.codes = b.codes.data_ptr();
  if (is_grouped(b.codec)) {
    a.scale = b.scale.data<float>();
    a.group_shift = log2_exact(b.group_size);
    if (is_expand(b.codec)) {
      a.expo = b.expo.data<float>();
      a.center = b.center.data<float>();
      a.tables = tables_of(b);
    }
  }
  return a;
}

bool codes_aligned(const MomentBuffers& b) {
  return aligned(b.codes.data_ptr(), kVec * dtype_size(b.codes.dtype()));
}

/// fused_step_kernel<CM, CV, kFull> over tiles [tile_begin, tile_end), at most as many blocks as are resident.
template <Codec CM, Codec CV, bool kFull>
void launch_tiles(const StepArgs& a, const DecayArgs& d, const Tensor& like, int64_t tile_begin, int64_t tile_end) {
  if (tile_end <= tile_begin) return;
  auto kernel = fused_step_kernel<CM, CV, kFull>;
  int per_sm = 0;
  COAT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0));
  const int64_t resident =
      static_cast<int64_t>(std::max(per_sm, 1)) * context_of(like).properties().multiprocessor_count;
  const unsigned grid = static_cast<unsigned>(std::max<int64_t>(1, std::min(tile_end - tile_begin, resident)));
  kernel<<<grid, kThreads, 0, stream_of(like)>>>(a, d, tile_begin, tile_end);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

/// Vector-aligned buffers: the whole tiles by the kFull kernel, a partial last tile by one block of the
/// general-tile kernel (tiles hold whole groups, so the two launches share no group). Otherwise every tile by
/// the general-tile kernel.
template <Codec CM, Codec CV>
void launch_fused(const StepArgs& a, const DecayArgs& d, const Tensor& like) {
  const int64_t tiles = (a.n + kTile - 1) / kTile;
  if (!a.vectorized) {
    launch_tiles<CM, CV, false>(a, d, like, 0, tiles);
    return;
  }
  const int64_t full = a.n / kTile;
  launch_tiles<CM, CV, true>(a, d, like, 0, full);
  launch_tiles<CM, CV, false>(a, d, like, full, tiles);
}

}  // namespace

bool fast_groups(const MomentBuffers& b) {
  if (!is_grouped(b.codec)) return true;
  const int64_t gs = b.group_size;
  return gs >= kMinFastGroup && gs <= kTile && (gs & (gs - 1)) == 0;
}

void fused_step(Tensor& param, const Tensor& grad, const MomentBuffers& m, const MomentBuffers& v,
                const AdamWScalars& with_decay, const AdamWScalars& without_decay, const DecayArgs& d,
                uint16_t* compute, const int32_t* skip_flag, Tensor* maxima) {
  const int64_t n = param.numel();
  StepArgs a;
  a.param = param.data<float>();
  a.grad = grad.data<float>();
  a.n = n;
  a.m = moment_args(m);
  a.v = moment_args(v);
  a.scalars = with_decay;
  a.no_decay = without_decay.decay;
  a.compute = compute;
  a.skip = skip_flag;
  a.maxima = maxima != nullptr ? maxima->data<float>() : nullptr;
  a.vectorized = aligned(a.param, 16) && aligned(a.grad, 16) && codes_aligned(m) && codes_aligned(v) &&
                 (a.compute == nullptr || aligned(a.compute, 8));
  a.prefetch = a.vectorized && aligned(m.codes.data_ptr(), 16) && aligned(v.codes.data_ptr(), 16);
  dispatch_codec(m.codec, [&](auto cm) {
    dispatch_codec(v.codec,
                   [&](auto cv) { launch_fused<decltype(cm)::value, decltype(cv)::value>(a, d, param); });
  });
}

}  // namespace coat::cuda::qadamw
