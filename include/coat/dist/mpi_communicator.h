// MpiCommunicator: collectives over MPI on host memory. CUDA tensors are staged through the host, so that
// several ranks can share one GPU (NCCL refuses that): the tests' multi-rank runs on one card.
#pragma once

#include "coat/core/context.h"
#include "coat/dist/communicator.h"

namespace coat::dist {

/// Synchronous: every collective has finished (and a CUDA output has been written on its context's
/// stream, in order with later work) when the call returns.
///
/// Determinism: sums and averages do not use MPI_Allreduce/MPI_Reduce_scatter, whose association order
/// depends on the algorithm MPI picks for the message size and world. Each rank instead receives every
/// rank's contribution to its elements (MPI_Allgather for all_reduce, MPI_Alltoall for reduce_scatter)
/// and adds them in rank order, ((x0 + x1) + x2) + ..., in the accumulation type (float for BF16/F16,
/// rounded once at the end). Results are therefore bit-identical on every rank and from run to run, and
/// equal to a plain loop over the ranks. The price: all_reduce holds world * n elements of scratch.
class MpiCommunicator final : public Communicator {
 public:
  /// Collective over `group` (it takes a communicator of its own: ProcessGroup::duplicate).
  explicit MpiCommunicator(const ProcessGroup& group);
  CommunicatorKind kind() const override { return CommunicatorKind::Mpi; }
  void barrier() override;

 private:
  CommWork run_all_gather(const Tensor& input, Tensor& output) override;
  CommWork run_reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) override;
  CommWork run_all_reduce(Tensor& tensor, ReduceOp op) override;
  CommWork run_broadcast(Tensor& tensor, int root) override;

  /// t itself on the CPU; a host copy of a CUDA tensor.
  Tensor to_host(const Tensor& t) const;
  /// Where a collective writes dst's elements: dst itself on the CPU, new host memory for a CUDA dst.
  Tensor host_destination(const Tensor& dst) const;
  /// Copies a staged result into a CUDA dst (nothing for a CPU dst, written in place).
  static void write_back(Tensor& dst, const Tensor& host);

  ProcessGroup group_;
  ContextPtr host_;  // staging and scratch memory
};

}  // namespace coat::dist
