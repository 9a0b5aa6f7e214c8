// The trainer's view of the units' state for the optimizer and checkpoints, whether the units are whole
// (one process) or sharded over ranks: the optimizer's buffers (a rank's slices, with their decay ranges),
// the tensors a checkpoint stores (per parameter and per optimizer state, always in one process's layout:
// a sharded run gathers them, so any world size can resume from them) and loading them back into whole or
// sharded units.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "coat/dist/communicator.h"
#include "coat/io/tensor_file.h"
#include "coat/models/unit_store.h"
#include "coat/optim/adamw.h"

namespace coat::train {

/// One optimizer buffer per unit (its masters, or this rank's slice of them), decay per parameter as
/// `decays(name)` says; the compute copy (or slice) the optimizer refreshes in the same pass.
std::vector<optim::OptimBuffer> unit_buffers(models::UnitStore& store,
                                             const std::function<bool(const std::string&)>& decays);

/// The checkpoint's tensors: every parameter's master (by HF name) and every optimizer state tensor, as one
/// process holds them. With a sharded store every rank must call it (it gathers over `comm`, unit by unit,
/// into host memory); `comm` may be null for a whole store.
std::vector<std::pair<std::string, Tensor>> checkpoint_tensors(const models::UnitStore& store,
                                                               const optim::AdamW& optimizer, dist::Communicator* comm);

/// Reads every parameter's master (or this rank's slice of the units) from a checkpoint's tensor file.
void load_masters(models::UnitStore& store, const io::TensorFileReader& file);
/// Reads the optimizer's flat states ("<unit>.exp_avg", ...) into a sharded store's slices.
void load_state_slices(const models::UnitStore& store, const optim::AdamW& optimizer, const io::TensorFileReader& file);

}  // namespace coat::train
