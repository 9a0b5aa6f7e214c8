// What a run resumes from: choosing the checkpoint (`--resume auto` takes the newest complete one whose
// checksums verify, renaming damaged ones `step_N.corrupt`; `--resume DIR` is refused when older than the
// run's newest complete checkpoint) and checking that it fits the config (model, optimizer state storage),
// all before the trainer writes anything into the run directory.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "coat/core/context.h"
#include "coat/data/loss_mask_file.h"
#include "coat/dist/communicator.h"
#include "coat/io/checkpoint_reader.h"
#include "coat/train/train_config.h"

namespace coat::train {

/// Throws ConfigError when `checkpoint` cannot resume a run of `config`: it holds weights only (an import:
/// "start a run from it with train.init_from"), another model (each model key that differs, with both
/// values), another storage of an AdamW moment (the moment and both storages), or a data.loss_mask set in
/// one of the two runs only.
void check_resumable(const io::CheckpointReader& checkpoint, const TrainConfig& config);

/// What a checkpoint's meta.json records of the run's loss mask ("loss_mask"): its path, entries, counted
/// entries and the CRC-32C of its entries.
nlohmann::json loss_mask_record(const data::LossMaskFile& mask);
/// Throws ConfigError when the checkpoint was trained under another loss mask than `mask` (nullptr: none): a
/// mask added or removed, or one with other entries (compared by count and CRC-32C, so that a mask file that
/// moved resumes). check_resumable refuses a mask added or removed already, from the configs alone.
void check_same_loss_mask(const io::CheckpointReader& checkpoint, const data::LossMaskFile* mask);

/// The checkpoint coat-train's `--resume` names, checked, or nullopt (an empty `resume`, or "auto" in a run
/// without a complete checkpoint). First rank 0 removes what a crash left in the run's checkpoints directory
/// (io::remove_checkpoint_leftovers) and says so. Then:
///  - "auto": the newest complete checkpoint is verified (every byte of meta.json and of every rank file
///  against
///    COMPLETE; the ranks share the files); a damaged one is renamed `step_N.corrupt` with a warning naming
///    the file (and the tensor) and the one before is tried.
///  - a directory: refused (ConfigError) when the run directory holds a newer complete checkpoint, or when it
///    is incomplete or damaged (IoError); never renamed.
/// The chosen checkpoint must pass check_resumable. Collective over `world` (null: one process): rank 0
/// decides and renames, every rank verifies its share and returns the same answer, or throws the same error.
/// `context`: where the agreement tensors live (the communicator's device).
std::optional<std::filesystem::path> choose_resume_checkpoint(const std::string& resume,
                                                              const TrainConfig& config,
                                                              dist::Communicator* world,
                                                              const ContextPtr& context);
/// choose_resume_checkpoint's checkpoint, opened for Trainer::load_checkpoint (nullopt likewise, collective
/// likewise): since every rank file has passed its whole-file check against COMPLETE and every rank knows it,
/// the reader takes them as verified (io::CheckpointReader::mark_all_files_verified) and the load copies the
/// tensors without checksumming them again. A resume checksums each byte once; checksummed_bytes(), summed
/// over the ranks, is the rank files' size.
std::optional<io::CheckpointReader> open_resume_checkpoint(const std::string& resume,
                                                           const TrainConfig& config,
                                                           dist::Communicator* world,
                                                           const ContextPtr& context);

}  // namespace coat::train
