// Collectives over a few host values (flags, sizes, checksums, a message): how ranks agree on a decision, as
// the checkpoint protocol does (every rank reports its file, rank 0 commits or abandons, all learn the
// result). They stage through a small tensor on `context`'s device (the communicator's: NCCL moves device
// memory) and block until done. Every rank of the communicator calls them in the same order; a null
// communicator is one process (the values come back as they are).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "coat/core/context.h"
#include "coat/dist/communicator.h"

namespace coat::dist {

/// Every rank's `values` (the same count on every rank), in rank order: world_size * values.size() values.
std::vector<int64_t> all_gather_values(Communicator* comm, const ContextPtr& context,
                                       const std::vector<int64_t>& values);

/// Rank `root`'s `values` on every rank (the same count on every rank).
std::vector<int64_t> broadcast_values(Communicator* comm, const ContextPtr& context,
                                      std::vector<int64_t> values, int root);

/// Rank `root`'s `text` on every rank (`text` is ignored elsewhere).
std::string broadcast_text(Communicator* comm, const ContextPtr& context, const std::string& text, int root);

}  // namespace coat::dist
