// ProcessGroup: who this process is among the ranks of a job (rank, world size, rank on its node), built
// from the environment mpirun leaves, and the sub-groups of hybrid sharding. World 1 without mpirun.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "coat/dist/mpi_check.h"

namespace coat::dist {

class MpiRuntime;

/// An owning handle to a set of ranks. Move-only; every group (and every communicator built from one)
/// keeps MPI alive, so MPI is finalised when the last of them is gone, in whatever order they go.
///
/// Without a launcher (no OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK in the environment) and with MPI not
/// initialised by the program, the world is this one process and MPI is never initialised: a plain run is
/// exactly what it was before the dist layer existed.
class ProcessGroup {
 public:
  struct HybridGroups;

  /// The world: initialises MPI (MPI_THREAD_SERIALIZED) when launched by mpirun and MPI is not initialised
  /// yet; finalises it when the last group goes if it initialised it. Errors on the group's communicator
  /// return (MPI_ERRORS_RETURN) so that COAT_MPI_CHECK turns them into MpiError.
  static ProcessGroup from_environment();
  /// A group of this process alone, with no MPI at all (what from_environment gives without a launcher).
  static ProcessGroup single_process();

  ~ProcessGroup();
  ProcessGroup(ProcessGroup&& other) noexcept;
  ProcessGroup& operator=(ProcessGroup&& other) noexcept;
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  /// Rank among the group's ranks on this node (MPI_Comm_split_type MPI_COMM_TYPE_SHARED), and how many
  /// of the group's ranks share the node: what picks the GPU and tells whether ranks must share one.
  int local_rank() const { return local_rank_; }
  int local_world_size() const { return local_world_size_; }
  /// True when the group runs over MPI (launched by mpirun, even with one process).
  bool uses_mpi() const { return comm_ != MPI_COMM_NULL; }
  /// The group's own MPI communicator; MPI_COMM_NULL when !uses_mpi().
  MPI_Comm mpi_comm() const { return comm_; }

  /// The same ranks over a communicator of their own, so that a library's messages (a communicator's)
  /// never match another's.
  ProcessGroup duplicate() const;

  /// Hybrid sharding: parameters are sharded within groups of `shard_size` consecutive ranks (rank r is
  /// in the group of ranks r / shard_size * shard_size ... + shard_size - 1) and replicated across the
  /// groups (the replicate group of r holds the ranks with the same r % shard_size). shard_size must
  /// divide the world size. Collective: every rank of the group calls it.
  HybridGroups split(int shard_size) const;

  /// The group's first `ranks` ranks as a group of their own (in the same order), for work that runs on fewer
  /// ranks than the job has (a test of a resume on another world size); nullopt on the other ranks.
  /// Collective: every rank of the group calls it.
  std::optional<ProcessGroup> first_ranks(int ranks) const;

  /// Returns on each rank once every rank of the group has called it.
  void barrier() const;
  /// Copies `bytes` of rank `root` into `bytes` on every rank (the NCCL unique id travels this way).
  void broadcast_bytes(std::span<std::byte> bytes, int root) const;

  /// The failure path: ends every rank of the job with exit code `code` (MPI_Abort) so that an exception
  /// on one rank does not leave the others waiting in a collective forever. Without MPI there is nobody
  /// else to end: it returns, and the caller returns its exit code as usual.
  void abort(int code) const;

  /// "[rank r] " for r != 0 when the world has more than one rank, else "": the prefix of log lines.
  std::string log_prefix() const;

 private:
  ProcessGroup(std::shared_ptr<MpiRuntime> runtime, MPI_Comm comm);
  void reset() noexcept;

  std::shared_ptr<MpiRuntime> runtime_;  // null without MPI
  MPI_Comm comm_ = MPI_COMM_NULL;        // owned (freed in the destructor) when not null
  int rank_ = 0;
  int world_size_ = 1;
  int local_rank_ = 0;
  int local_world_size_ = 1;
};

struct ProcessGroup::HybridGroups {
  ProcessGroup shard;      // consecutive ranks that split each parameter among them
  ProcessGroup replicate;  // one rank of each shard group, holding the same slices
};

/// Installs a pattern on spdlog's default logger that starts every line of this process with
/// group.log_prefix(), so that lines from ranks other than 0 say where they come from.
void set_rank_log_prefix(const ProcessGroup& group);

}  // namespace coat::dist
