// ProcessGroup: MPI's lifetime, the world and its sub-groups, and the rank log prefix.
#include "coat/dist/process_group.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <exception>
#include <utility>

namespace coat::dist {

/// Owns MPI's initialisation: MPI_Finalize runs when the last group or communicator holding it goes, and
/// only when this process initialised MPI (a program that initialised MPI itself finalises it itself).
class MpiRuntime {
 public:
  MpiRuntime() {
    int initialized = 0;
    COAT_MPI_CHECK(MPI_Initialized(&initialized));
    if (initialized) return;
    // SERIALIZED: every MPI call comes from one thread at a time; a communication or watchdog thread may
    // make calls later without the main thread's involvement.
    int provided = 0;
    COAT_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided));
    owns_mpi_ = true;
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      throw MpiError(::coat::detail::concat("[ProcessGroup] MPI provides thread level ", provided,
                                            "; at least MPI_THREAD_FUNNELED is needed"));
    }
  }
  ~MpiRuntime() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    // MPI_Finalize is collective: while an exception unwinds, the other ranks may never get there. Leaving
    // without it makes mpirun end the whole job, which is what a failing rank wants.
    if (owns_mpi_ && !finalized && std::uncaught_exceptions() == 0) MPI_Finalize();
  }
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

 private:
  bool owns_mpi_ = false;
};

namespace {

bool launched_by_mpirun() {
  // Open MPI's mpirun sets OMPI_COMM_WORLD_SIZE; Hydra (MPICH) sets PMI_SIZE; PMIx launchers (srun,
  // prterun) set PMIX_RANK.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

bool mpi_initialized() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

// Takes ownership of `comm` (frees it on a throw) and makes its errors return to COAT_MPI_CHECK.
MPI_Comm adopt_communicator(MPI_Comm comm) {
  const int status = MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  if (status != MPI_SUCCESS) {
    MPI_Comm_free(&comm);
    COAT_MPI_CHECK(status);
  }
  return comm;
}

}  // namespace

ProcessGroup ProcessGroup::from_environment() {
  if (!launched_by_mpirun() && !mpi_initialized()) return single_process();
  auto runtime = std::make_shared<MpiRuntime>();
  MPI_Comm world = MPI_COMM_NULL;
  // A duplicate of MPI_COMM_WORLD: our error handler and our messages stay off the program's world.
  COAT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &world));
  return ProcessGroup(std::move(runtime), adopt_communicator(world));
}

ProcessGroup ProcessGroup::single_process() {
  return ProcessGroup(nullptr, MPI_COMM_NULL);
}

ProcessGroup::ProcessGroup(std::shared_ptr<MpiRuntime> runtime, MPI_Comm comm)
    : runtime_(std::move(runtime)), comm_(comm) {
  if (comm_ == MPI_COMM_NULL) return;
  try {
    COAT_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    COAT_MPI_CHECK(MPI_Comm_size(comm_, &world_size_));
    MPI_Comm node = MPI_COMM_NULL;
    COAT_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    const int rank_status = MPI_Comm_rank(node, &local_rank_);
    const int size_status = MPI_Comm_size(node, &local_world_size_);
    MPI_Comm_free(&node);
    COAT_MPI_CHECK(rank_status);
    COAT_MPI_CHECK(size_status);
  } catch (...) {
    reset();
    throw;
  }
}

ProcessGroup::~ProcessGroup() {
  reset();
}

void ProcessGroup::reset() noexcept {
  if (comm_ != MPI_COMM_NULL && mpi_initialized()) MPI_Comm_free(&comm_);
  comm_ = MPI_COMM_NULL;
  runtime_.reset();  // last: MPI may be finalised here
}

ProcessGroup::ProcessGroup(ProcessGroup&& other) noexcept
    : runtime_(std::move(other.runtime_)),
      comm_(std::exchange(other.comm_, MPI_COMM_NULL)),
      rank_(other.rank_),
      world_size_(other.world_size_),
      local_rank_(other.local_rank_),
      local_world_size_(other.local_world_size_) {}

ProcessGroup& ProcessGroup::operator=(ProcessGroup&& other) noexcept {
  if (this != &other) {
    reset();
    runtime_ = std::move(other.runtime_);
    comm_ = std::exchange(other.comm_, MPI_COMM_NULL);
    rank_ = other.rank_;
    world_size_ = other.world_size_;
    local_rank_ = other.local_rank_;
    local_world_size_ = other.local_world_size_;
  }
  return *this;
}

ProcessGroup ProcessGroup::duplicate() const {
  if (!uses_mpi()) return single_process();
  MPI_Comm copy = MPI_COMM_NULL;
  COAT_MPI_CHECK(MPI_Comm_dup(comm_, &copy));
  return ProcessGroup(runtime_, adopt_communicator(copy));
}

ProcessGroup::HybridGroups ProcessGroup::split(int shard_size) const {
  COAT_ARG_CHECK(shard_size >= 1 && world_size_ % shard_size == 0, "ProcessGroup::split", "shard_size ",
                 shard_size, " does not divide the world size ", world_size_,
                 "; HINT: choose a shard size that divides the number of ranks (1 replicates everything, ",
                 world_size_, " shards over all ranks)");
  if (!uses_mpi()) return {single_process(), single_process()};
  // The key (rank) keeps the world's order inside each sub-group.
  MPI_Comm shard = MPI_COMM_NULL;
  COAT_MPI_CHECK(MPI_Comm_split(comm_, rank_ / shard_size, rank_, &shard));
  ProcessGroup shard_group(runtime_, adopt_communicator(shard));
  MPI_Comm replicate = MPI_COMM_NULL;
  COAT_MPI_CHECK(MPI_Comm_split(comm_, rank_ % shard_size, rank_, &replicate));
  ProcessGroup replicate_group(runtime_, adopt_communicator(replicate));
  return {std::move(shard_group), std::move(replicate_group)};
}

std::optional<ProcessGroup> ProcessGroup::first_ranks(int ranks) const {
  COAT_ARG_CHECK(ranks >= 1 && ranks <= world_size_, "ProcessGroup::first_ranks", ranks,
                 " ranks of a group of ", world_size_);
  if (!uses_mpi()) return single_process();
  MPI_Comm part = MPI_COMM_NULL;
  COAT_MPI_CHECK(MPI_Comm_split(comm_, rank_ < ranks ? 0 : MPI_UNDEFINED, rank_, &part));
  if (part == MPI_COMM_NULL) return std::nullopt;
  return ProcessGroup(runtime_, adopt_communicator(part));
}

void ProcessGroup::barrier() const {
  if (uses_mpi()) COAT_MPI_CHECK(MPI_Barrier(comm_));
}

void ProcessGroup::broadcast_bytes(std::span<std::byte> bytes, int root) const {
  COAT_ARG_CHECK(root >= 0 && root < world_size_, "broadcast_bytes", "root ", root,
                 " is not a rank of a group of ", world_size_);
  if (!uses_mpi()) return;
  // MPI counts are int: send in pieces so that any size works.
  constexpr size_t kMaxPiece = INT_MAX;
  for (size_t offset = 0; offset < bytes.size(); offset += kMaxPiece) {
    const size_t piece = std::min(kMaxPiece, bytes.size() - offset);
    COAT_MPI_CHECK(MPI_Bcast(bytes.data() + offset, static_cast<int>(piece), MPI_BYTE, root, comm_));
  }
}

void ProcessGroup::abort(int code) const {
  if (!mpi_initialized()) return;
  // set_rank_log_prefix puts the rank in front of the line.
  spdlog::critical("ending every rank of the job (exit code {})", code);
  // MPI_COMM_WORLD, not the group: a failure on one rank of a sub-group must end the whole job.
  MPI_Abort(MPI_COMM_WORLD, code);
}

std::string ProcessGroup::log_prefix() const {
  if (world_size_ <= 1 || rank_ == 0) return "";
  return ::coat::detail::concat("[rank ", rank_, "] ");
}

void set_rank_log_prefix(const ProcessGroup& group) {
  // spdlog's default pattern with the prefix before the message; rank 0's lines stay as they were.
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] " + group.log_prefix() + "%v");
}

}  // namespace coat::dist
