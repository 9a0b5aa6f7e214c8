// One rank's slice of a flat unit when the units are sharded over ranks (FSDP / ZeRO-3): every rank holds
// `shard_numel` elements, a multiple of `align` (the optimizer state group, so that no FP8 state group
// straddles two ranks and each rank's groups are exactly those of one process), rank r the unit elements
// [r * shard_numel, (r + 1) * shard_numel); the last shards reach past the unit's end and are padded with
// zeros (padded_numel = world * shard_numel).
#pragma once

#include <algorithm>
#include <cstdint>

#include "coat/core/error.h"

namespace coat::models {

/// How units are sharded: this rank, the ranks that share the units, the shard alignment in elements.
struct ShardSpec {
  int rank = 0;
  int world = 1;
  int64_t align = 128;
};

struct UnitShard {
  int64_t numel = 0;         ///< elements of the whole unit (its alignment padding included)
  int64_t shard_numel = 0;   ///< elements every rank holds
  int64_t begin = 0;         ///< the first unit element of this rank's shard
  int64_t owned = 0;         ///< elements of the shard inside the unit (the rest is padding)
  int64_t padded_numel() const { return shard_numel * world; }
  int world = 1;

  static UnitShard of(int64_t numel, const ShardSpec& spec) {
    COAT_ARG_CHECK(spec.world >= 1 && spec.rank >= 0 && spec.rank < spec.world && spec.align >= 1, "UnitShard",
                   "rank ", spec.rank, " of world ", spec.world, " with alignment ", spec.align, " is invalid");
    UnitShard s;
    s.numel = numel;
    s.world = spec.world;
    const int64_t per_rank = (numel + spec.world - 1) / spec.world;
    s.shard_numel = std::max<int64_t>(spec.align, (per_rank + spec.align - 1) / spec.align * spec.align);
    s.begin = s.shard_numel * spec.rank;
    s.owned = std::clamp<int64_t>(numel - s.begin, 0, s.shard_numel);
    return s;
  }
};

}  // namespace coat::models
