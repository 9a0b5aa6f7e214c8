// The trainer's view of the units' state for the optimizer and checkpoints, whether the units are whole
// (one process) or sharded over ranks: the optimizer's buffers (a rank's slices, with their decay ranges),
// the layout and this rank's slices of a checkpoint (each rank writes its own file; nothing is gathered), and
// loading a checkpoint of any world size back into whole or sharded units (a re-slice by unit offset).
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "coat/dist/communicator.h"
#include "coat/io/checkpoint_layout.h"
#include "coat/io/checkpoint_reader.h"
#include "coat/models/unit_store.h"
#include "coat/optim/adamw.h"

namespace coat::train {

/// One optimizer buffer per unit (its masters, or this rank's slice of them), decay per parameter as
/// `decays(name)` says; the compute copy (or slice) the optimizer refreshes in the same pass.
std::vector<optim::OptimBuffer> unit_buffers(models::UnitStore& store,
                                             const std::function<bool(const std::string&)>& decays);

/// A unit as a checkpoint's layout describes it (name, elements, each parameter's name, shape and offset).
io::CheckpointUnit checkpoint_unit(const models::UnitLayout& layout);

/// The layout of a (format-2) checkpoint of this store and optimizer: the units with their parameters, the
/// tensors stored per unit ("master", then the optimizer's states with one entry per element or per state
/// group), and one rank file per rank of the shard group, each with that rank's slice of every unit (a whole
/// store: one file with every unit whole). The same on every rank; nothing is communicated.
io::CheckpointLayout checkpoint_layout(const models::UnitStore& store, const optim::AdamW& optimizer);

/// This rank's rank file: "<unit>.master" (its slice of the unit's masters) and "<unit>.<state>" (the entries
/// of its slice of every optimizer state tensor, in their stored form: codes, scales, exponents, centres),
/// for every unit of which it holds part. Views of the live buffers: a writer on another thread must copy
/// them first.
std::vector<std::pair<std::string, Tensor>> checkpoint_slices(const models::UnitStore& store,
                                                              const optim::AdamW& optimizer);

/// Reads every parameter's master (or, sharded, this rank's slice of every unit) from a checkpoint of any
/// format and world size: only the ranges this rank holds are read.
void load_masters(models::UnitStore& store, const io::CheckpointReader& checkpoint);
/// Reads the optimizer's flat states ("<unit>.exp_avg", ...) into the store's whole units or this rank's
/// slices (the padding of a last shard is zeroed).
void load_state_slices(const models::UnitStore& store, const optim::AdamW& optimizer,
                       const io::CheckpointReader& checkpoint);

}  // namespace coat::train
