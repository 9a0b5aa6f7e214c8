// Communicator: the collectives sharded training needs (all-gather, reduce-scatter, all-reduce, broadcast,
// barrier) over the ranks of a ProcessGroup, validated here once and run by a backend: local (world 1),
// MPI (CPU; CUDA staged through host memory) or NCCL (CUDA). make_communicator picks one.
#pragma once

#include <chrono>
#include <memory>
#include <string_view>

#include "coat/core/device.h"
#include "coat/core/tensor.h"
#include "coat/dist/process_group.h"

namespace coat::dist {

enum class ReduceOp { Sum, Average, Max };
std::string_view reduce_op_name(ReduceOp op);

enum class CommunicatorKind { Auto, Local, Mpi, Nccl };
std::string_view communicator_kind_name(CommunicatorKind kind);

/// A collective a backend queued without waiting for it (NCCL on its communication stream).
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  /// Work queued from now on the compute stream of the collective's tensors runs after the collective;
  /// the host does not wait.
  virtual void make_compute_wait() = 0;
  /// Blocks the host until the collective is done.
  virtual void synchronize() = 0;
  virtual bool is_complete() const = 0;
};

/// The completion of one collective. Synchronous backends (local, MPI) return a finished one.
/// Dropping a CommWork is the same as wait(): the compute stream never races ahead of a collective whose
/// buffers it might reuse.
class CommWork {
 public:
  CommWork() = default;
  explicit CommWork(std::unique_ptr<PendingCollective> pending) : pending_(std::move(pending)) {}

  /// Orders later work on the tensors' compute stream after the collective (no host wait).
  void wait();
  /// Blocks the host until the collective is done (for tests and the end of a step, not per unit).
  void synchronize();
  bool is_complete() const;

 private:
  std::unique_ptr<PendingCollective> pending_;
};

/// Every tensor is contiguous; only the element count matters, not the shape. All ranks call each
/// collective in the same order with the same counts, dtypes and root (that is not checked: it would cost
/// a collective). Inputs may be read until the returned work completes, outputs are written until then.
///
/// Dtypes: all_gather and broadcast move bytes, so any dtype works (FP8 codes, BF16, integers).
/// Reductions take F32, F64, BF16, F16, I32 and I64 (Average: floats only); FP8 codes are refused (they
/// are gathered after a shared scale, never summed).
class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  virtual CommunicatorKind kind() const = 0;

  /// output (world * n elements) <- every rank's input (n elements), in rank order. input may be
  /// output's own slice [rank * n, (rank + 1) * n) (in place); no other overlap.
  CommWork all_gather(const Tensor& input, Tensor& output);
  /// output (n elements) <- slice [rank * n, (rank + 1) * n) of input (world * n elements) reduced over
  /// the ranks. output may be input's own slice for this rank (in place); no other overlap.
  CommWork reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op = ReduceOp::Sum);
  /// tensor <- tensor reduced over the ranks, in place.
  CommWork all_reduce(Tensor& tensor, ReduceOp op = ReduceOp::Sum);
  /// tensor <- rank root's tensor, in place.
  CommWork broadcast(Tensor& tensor, int root);
  /// Returns once every rank has called it (the host's view; queued device work is not waited for).
  virtual void barrier() = 0;

 protected:
  Communicator(int rank, int world_size) : rank_(rank), world_size_(world_size) {}

  // Called after validation: contiguous, defined, same dtype and device, counts consistent.
  virtual CommWork run_all_gather(const Tensor& input, Tensor& output) = 0;
  virtual CommWork run_reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) = 0;
  virtual CommWork run_all_reduce(Tensor& tensor, ReduceOp op) = 0;
  virtual CommWork run_broadcast(Tensor& tensor, int root) = 0;

 private:
  int rank_;
  int world_size_;
};

/// World 1: gathers and scatters copy, reductions of one rank are the input itself.
class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator() : Communicator(0, 1) {}
  CommunicatorKind kind() const override { return CommunicatorKind::Local; }
  void barrier() override {}

 private:
  CommWork run_all_gather(const Tensor& input, Tensor& output) override;
  CommWork run_reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) override;
  CommWork run_all_reduce(Tensor& tensor, ReduceOp op) override;
  CommWork run_broadcast(Tensor& tensor, int root) override;
};

/// A communicator for `group` on `device`:
/// - Auto: Local for a world of one; MPI for CPU tensors, and for CUDA tensors when more ranks share a
///   node than it has GPUs (NCCL refuses two ranks on one GPU); NCCL otherwise.
/// - Local, Mpi, Nccl: that one, or InvalidArgument/NotImplemented saying why it cannot be.
/// Collective when MPI or NCCL is chosen: every rank of the group calls it. `collective_timeout`: how long an
/// NCCL collective may run before its watchdog aborts the communicator (dist.timeout_s; 0: never).
std::unique_ptr<Communicator> make_communicator(
    const ProcessGroup& group, Device device, CommunicatorKind kind = CommunicatorKind::Auto,
    std::chrono::milliseconds collective_timeout = std::chrono::minutes(10));

}  // namespace coat::dist
