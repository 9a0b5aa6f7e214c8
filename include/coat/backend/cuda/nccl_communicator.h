// NcclCommunicator: the collectives on one GPU per rank through NCCL, queued on a communication stream of
// their own and ordered against the compute stream with events; a watchdog thread turns NCCL's
// asynchronous errors and hung collectives into an aborted communicator and an NcclError. CUDA builds only.
#pragma once

#include <nccl.h>

#include <chrono>
#include <memory>

#include "coat/backend/cuda/stream.h"
#include "coat/dist/communicator.h"

namespace coat::cuda {

struct NcclOptions {
  /// A collective still running after this long counts as hung: the watchdog aborts the communicator so
  /// that every rank waiting in it gets an error instead of waiting forever. Zero disables the timeout.
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  /// How often the watchdog asks NCCL for asynchronous errors and looks at the running collectives.
  std::chrono::milliseconds poll_interval{100};
};

/// Collectives start after the work queued so far on the tensors' compute stream (an event, no host wait)
/// and run on the communicator's own stream; CommWork::wait orders later compute work after them. The
/// returned work keeps the tensors alive until then.
class NcclCommunicator final : public dist::Communicator {
 public:
  /// Collective over `group`: rank 0 makes the NCCL unique id and broadcasts it over MPI; every rank joins
  /// on `device` (its own GPU: NCCL refuses two ranks on one).
  NcclCommunicator(const dist::ProcessGroup& group, Device device, NcclOptions options = {});
  /// Waits for the queued collectives and destroys the communicator; while an exception unwinds it aborts
  /// it instead (the other ranks may never join the collectives this rank is waiting for).
  ~NcclCommunicator() override;

  dist::CommunicatorKind kind() const override { return dist::CommunicatorKind::Nccl; }
  /// A host barrier over the group (MPI); queued collectives are not waited for.
  void barrier() override;
  /// The failure path: ends the queued and running collectives (ncclCommAbort). Later calls throw.
  void abort();

  Device device() const { return device_; }
  cudaStream_t stream() const { return stream_.get(); }

 private:
  class Watchdog;
  struct CommHandle;

  dist::CommWork run_all_gather(const Tensor& input, Tensor& output) override;
  dist::CommWork run_reduce_scatter(const Tensor& input, Tensor& output, dist::ReduceOp op) override;
  dist::CommWork run_all_reduce(Tensor& tensor, dist::ReduceOp op) override;
  dist::CommWork run_broadcast(Tensor& tensor, int root) override;

  template <typename Collective>
  dist::CommWork enqueue(const char* op, const Tensor& input, const Tensor& output, Collective&& collective);

  dist::ProcessGroup group_;
  Device device_;
  Stream stream_;                     // the communication stream, on device_
  std::shared_ptr<CommHandle> comm_;  // shared with the watchdog, which may abort it
  std::unique_ptr<Watchdog> watchdog_;
};

}  // namespace coat::cuda
