// CPU reference of the compressed optimizer moments: the fused AdamW step, quantize and dequantize.
#include "coat/backend/cpu/quantized_adamw.h"

#include <algorithm>
#include <array>
#include <memory>
#include <utility>

namespace coat::cpu {
namespace {

using namespace moment_codec;

/// The expansion's table rows (moment_codec.h) of FP8 format Fmt, each computed at its first use.
template <DType Fmt>
class ExpandRows {
 public:
  ExpandRow row(int r) {
    std::unique_ptr<Data>& d = data_[size_t(r)];
    if (d == nullptr) {
      d = std::make_unique<Data>();
      for (uint32_t q = 0; q < uint32_t(kExpandMagnitudes); ++q) {
        d->values[q] = expand_value<Fmt>(r, q);
        d->pairs[q] = expand_pair<Fmt>(r, q);
      }
    }
    return ExpandRow{d->values.data(), d->pairs.data()};
  }

 private:
  struct Data {
    std::array<float, kExpandMagnitudes> values;
    std::array<BoundPair, kExpandMagnitudes> pairs;
  };
  std::array<std::unique_ptr<Data>, kExpandRows> data_;
};

/// One moment's codes and metadata with the per-group state of a pass: coders of the stored metadata,
/// statistics of the new values, the new metadata and its coders.
template <Codec C>
class MomentIO {
 public:
  static constexpr bool kGrouped = is_grouped(C);
  static constexpr DType kFmt = fp8_format(C);

  MomentIO(const MomentBuffers& b, int64_t numel)
      : codes_(b.codes.data<code_t<C>>()),
        group_size_(kGrouped ? b.group_size : std::max<int64_t>(numel, 1)) {
    if constexpr (kGrouped) {
      groups_ = (numel + group_size_ - 1) / group_size_;
      scale_ = b.scale.data<float>();
      if constexpr (is_expand(C)) {
        expo_ = b.expo.data<float>();
        center_ = b.center.data<float>();
      }
    }
  }

  int64_t group_size() const { return group_size_; }

  /// Coders of the stored metadata (before anything is overwritten).
  void prepare_decode() {
    if constexpr (kGrouped) {
      decoders_.resize(size_t(groups_));
      for (int64_t g = 0; g < groups_; ++g) decoders_[size_t(g)] = coded(group_coder<C>(stored_meta(g)));
    }
  }
  void reset_stats() {
    if constexpr (kGrouped) stats_.assign(size_t(groups_), GroupStats{});
  }
  float decode(int64_t i, int64_t g) const {
    if constexpr (kGrouped) {
      const uint8_t code = codes_[i];
      const Coded& d = decoders_[size_t(g)];
      if constexpr (is_expand(C)) {
        return decode_expand(code, d.coder.f, d.row.values);
      } else {
        return fp8math::dequantize_value<kFmt>(code, d.coder.a);
      }
    } else {
      (void)g;
      return load_plain<C>(codes_[i]);
    }
  }
  void add(int64_t g, float x) {
    if constexpr (kGrouped) add_value(stats_[size_t(g)], x);
  }
  /// New metadata and encoders from the statistics.
  void finish_stats() {
    if constexpr (kGrouped) {
      metas_.resize(size_t(groups_));
      encoders_.resize(size_t(groups_));
      for (int64_t g = 0; g < groups_; ++g) {
        encoders_[size_t(g)] = coded(group_meta_coder<C>(stats_[size_t(g)], metas_[size_t(g)]));
      }
    }
  }
  void encode(int64_t i, int64_t g, float x) {
    if constexpr (is_expand(C)) {
      const Coded& e = encoders_[size_t(g)];
      codes_[i] = encode_expand<kFmt>(x, e.coder, e.row);
    } else if constexpr (kGrouped) {
      codes_[i] = encode_plain<kFmt>(x, encoders_[size_t(g)].coder.a);
    } else {
      (void)g;
      codes_[i] = store_plain<C>(x);
    }
  }
  void store_meta() {
    if constexpr (kGrouped) {
      for (int64_t g = 0; g < groups_; ++g) {
        scale_[g] = metas_[size_t(g)].scale;
        if constexpr (is_expand(C)) {
          expo_[g] = metas_[size_t(g)].expo;
          center_[g] = metas_[size_t(g)].center;
        }
      }
    }
  }

 private:
  /// A group's coder with its table row (expansion).
  struct Coded {
    GroupCoder coder;
    ExpandRow row;
  };
  Coded coded(const GroupCoder& c) {
    Coded out{c, ExpandRow{}};
    if constexpr (is_expand(C)) out.row = rows_.row(expand_row(c.k));
    return out;
  }

  GroupMeta stored_meta(int64_t g) const {
    GroupMeta m;
    m.scale = scale_[g];
    if constexpr (is_expand(C)) {
      m.expo = expo_[g];
      m.center = center_[g];
    }
    return m;
  }

  code_t<C>* codes_;
  int64_t group_size_;
  int64_t groups_ = 1;
  float* scale_ = nullptr;
  float* expo_ = nullptr;
  float* center_ = nullptr;
  ExpandRows<kFmt> rows_;
  std::vector<Coded> decoders_, encoders_;
  std::vector<GroupStats> stats_;
  std::vector<GroupMeta> metas_;
};

/// Calls body(begin, end, group_m, group_v, in_decay) over maximal runs of [0, n) with one group of each
/// moment and one decay state.
template <typename Body>
void for_each_run(int64_t n, int64_t gs_m, int64_t gs_v, const DecayPlan& decay, Body&& body) {
  size_t r = 0;
  const size_t ranges = decay.begin.size();
  int64_t i = 0;
  while (i < n) {
    const int64_t gm = i / gs_m, gv = i / gs_v;
    int64_t end = std::min({n, (gm + 1) * gs_m, (gv + 1) * gs_v});
    bool in_decay = decay.all;
    if (!decay.all) {
      while (r < ranges && decay.end[r] <= i) ++r;
      if (r < ranges) {
        in_decay = decay.begin[r] <= i;
        end = std::min(end, in_decay ? decay.end[r] : decay.begin[r]);
      }
    }
    body(i, end, gm, gv, in_decay);
    i = end;
  }
}

template <Codec CM, Codec CV>
void step_impl(Tensor& param, const Tensor& grad, MomentBuffers& mb, MomentBuffers& vb,
               const adamw_math::AdamWScalars& with_decay, const adamw_math::AdamWScalars& without_decay,
               const DecayPlan& decay) {
  const int64_t n = param.numel();
  float* p = param.data<float>();
  const float* g = grad.data<float>();
  MomentIO<CM> m(mb, n);
  MomentIO<CV> v(vb, n);
  m.prepare_decode();
  v.prepare_decode();
  constexpr bool kGrouped = is_grouped(CM) || is_grouped(CV);
  // The update of element i (param, m, v after the step); both passes compute it, bit for bit the same.
  struct Updated {
    float p, m, v;
  };
  auto update = [&](int64_t i, int64_t gm, int64_t gv, const adamw_math::AdamWScalars& s) {
    Updated u{p[i], m.decode(i, gm), v.decode(i, gv)};
    adamw_math::adamw_update_for<uses_folded_update(CM, CV)>(u.p, g[i], u.m, u.v, s);
    return u;
  };
  if constexpr (kGrouped) {
    // Pass 1: the groups' statistics of the new moments (nothing written).
    m.reset_stats();
    v.reset_stats();
    for_each_run(n, m.group_size(), v.group_size(), decay,
                 [&](int64_t b, int64_t e, int64_t gm, int64_t gv, bool d) {
                   const adamw_math::AdamWScalars& s = d ? with_decay : without_decay;
                   for (int64_t i = b; i < e; ++i) {
                     const Updated u = update(i, gm, gv, s);
                     m.add(gm, u.m);
                     v.add(gv, u.v);
                   }
                 });
    m.finish_stats();
    v.finish_stats();
  }
  // Pass 2: the same update again (identical values), written; moments encoded with the new metadata.
  for_each_run(n, m.group_size(), v.group_size(), decay,
               [&](int64_t b, int64_t e, int64_t gm, int64_t gv, bool d) {
                 const adamw_math::AdamWScalars& s = d ? with_decay : without_decay;
                 for (int64_t i = b; i < e; ++i) {
                   const Updated u = update(i, gm, gv, s);
                   p[i] = u.p;
                   m.encode(i, gm, u.m);
                   v.encode(i, gv, u.v);
                 }
               });
  m.store_meta();
  v.store_meta();
}

}  // namespace

bool adamw_step_quantized(Tensor& param, const Tensor& grad, MomentBuffers& m, MomentBuffers& v,
                          const adamw_math::AdamWScalars& with_decay,
                          const adamw_math::AdamWScalars& without_decay, const DecayPlan& decay,
                          const Tensor* skip) {
  if (skip != nullptr && skip->data<int32_t>()[0] != 0) return true;
  dispatch_codec(m.codec, [&](auto cm) {
    dispatch_codec(v.codec, [&](auto cv) {
      step_impl<decltype(cm)::value, decltype(cv)::value>(param, grad, m, v, with_decay, without_decay,
                                                          decay);
    });
  });
  return false;
}

void quantize_moment(const Tensor& values, MomentBuffers& out) {
  const int64_t n = values.numel();
  const float* x = values.data<float>();
  dispatch_codec(out.codec, [&](auto tag) {
    constexpr Codec C = decltype(tag)::value;
    MomentIO<C> io(out, n);
    io.reset_stats();
    const int64_t gs = io.group_size();
    for (int64_t i = 0; i < n; ++i) io.add(i / gs, x[i]);
    io.finish_stats();
    for (int64_t i = 0; i < n; ++i) io.encode(i, i / gs, x[i]);
    io.store_meta();
  });
}

void dequantize_moment(const MomentBuffers& m, Tensor& out) {
  const int64_t n = out.numel();
  float* y = out.data<float>();
  dispatch_codec(m.codec, [&](auto tag) {
    constexpr Codec C = decltype(tag)::value;
    MomentIO<C> io(m, n);
    io.prepare_decode();
    const int64_t gs = io.group_size();
    for (int64_t i = 0; i < n; ++i) y[i] = io.decode(i, i / gs);
  });
}

}  // namespace coat::cpu
