// The device-agnostic half of the communicators: argument checks, CommWork, the world-1 communicator and
// the factory that picks a backend.
#include "coat/dist/communicator.h"

#include <spdlog/spdlog.h>

#include "coat/dist/mpi_communicator.h"
#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/nccl_communicator.h"
#endif

namespace coat::dist {

std::string_view reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return "sum";
    case ReduceOp::Average:
      return "average";
    case ReduceOp::Max:
      return "max";
  }
  return "?";
}

std::string_view communicator_kind_name(CommunicatorKind kind) {
  switch (kind) {
    case CommunicatorKind::Auto:
      return "auto";
    case CommunicatorKind::Local:
      return "local";
    case CommunicatorKind::Mpi:
      return "mpi";
    case CommunicatorKind::Nccl:
      return "nccl";
  }
  return "?";
}

// ---- CommWork ----

void CommWork::wait() {
  if (pending_) pending_->make_compute_wait();
}

void CommWork::synchronize() {
  if (pending_) pending_->synchronize();
}

bool CommWork::is_complete() const {
  return !pending_ || pending_->is_complete();
}

// ---- validation ----

namespace {

void check_tensor(const Tensor& t, const char* op, const char* role) {
  COAT_ARG_CHECK(t.defined(), op, role, " is undefined");
  COAT_ARG_CHECK(t.is_contiguous(), op, role, " ", t.str(),
                 " is not contiguous; HINT: ops::contiguous first");
}

void check_pair(const Tensor& input, const Tensor& output, const char* op) {
  check_tensor(input, op, "input");
  check_tensor(output, op, "output");
  COAT_ARG_CHECK(input.dtype() == output.dtype(), op, "input dtype ", dtype_name(input.dtype()),
                 " differs from output dtype ", dtype_name(output.dtype()));
  COAT_ARG_CHECK(input.device() == output.device(), op, "input on ", input.device().str(), " but output on ",
                 output.device().str());
}

void check_reducible(DType dtype, ReduceOp op, const char* name) {
  const bool reducible = dtype == DType::F32 || dtype == DType::F64 || dtype == DType::BF16 ||
                         dtype == DType::F16 || dtype == DType::I32 || dtype == DType::I64;
  COAT_ARG_CHECK(reducible, name, "cannot reduce ", dtype_name(dtype), " tensors",
                 is_fp8(dtype) ? " (FP8 codes are gathered after a shared scale, never summed)" : "",
                 "; reductions take f32, f64, bf16, f16, i32 and i64");
  COAT_ARG_CHECK(op != ReduceOp::Average || is_floating(dtype), name, "average of ", dtype_name(dtype),
                 " is not defined (integer division); use sum");
}

// Byte range [begin, end) of a contiguous tensor within its storage.
struct ByteRange {
  size_t begin, end;
};
ByteRange byte_range(const Tensor& t) {
  const size_t begin = static_cast<size_t>(t.offset()) * dtype_size(t.dtype());
  return {begin, begin + t.nbytes()};
}

// In place means exactly `part` == elements [rank * n, (rank + 1) * n) of `whole`; any other overlap would
// let one rank's data overwrite what it still has to send.
void check_overlap(const Tensor& part, const Tensor& whole, int rank, const char* op) {
  if (!part.shares_storage_with(whole)) return;
  const ByteRange p = byte_range(part);
  const ByteRange w = byte_range(whole);
  if (p.end <= w.begin || w.end <= p.begin) return;
  const size_t rank_slice_begin = w.begin + static_cast<size_t>(rank) * part.nbytes();
  COAT_ARG_CHECK(p.begin == rank_slice_begin, op,
                 "input and output overlap but the smaller is not this rank's ", "slice (rank ", rank,
                 "); HINT: in place means the slice [rank * n, (rank + 1) * n)");
}

}  // namespace

CommWork Communicator::all_gather(const Tensor& input, Tensor& output) {
  check_pair(input, output, "all_gather");
  COAT_ARG_CHECK(output.numel() == input.numel() * world_size_, "all_gather", "output has ", output.numel(),
                 " elements; ", world_size_, " ranks of ", input.numel(), " need ",
                 input.numel() * world_size_);
  check_overlap(input, output, rank_, "all_gather");
  return run_all_gather(input, output);
}

CommWork Communicator::reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) {
  check_pair(input, output, "reduce_scatter");
  check_reducible(input.dtype(), op, "reduce_scatter");
  COAT_ARG_CHECK(input.numel() == output.numel() * world_size_, "reduce_scatter", "input has ", input.numel(),
                 " elements, not ", world_size_, " ranks x ", output.numel(),
                 " output elements; HINT: pad the input to a multiple of the world size");
  check_overlap(output, input, rank_, "reduce_scatter");
  return run_reduce_scatter(input, output, op);
}

CommWork Communicator::all_reduce(Tensor& tensor, ReduceOp op) {
  check_tensor(tensor, "all_reduce", "tensor");
  check_reducible(tensor.dtype(), op, "all_reduce");
  return run_all_reduce(tensor, op);
}

CommWork Communicator::broadcast(Tensor& tensor, int root) {
  check_tensor(tensor, "broadcast", "tensor");
  COAT_ARG_CHECK(root >= 0 && root < world_size_, "broadcast", "root ", root, " is not a rank of a world of ",
                 world_size_);
  return run_broadcast(tensor, root);
}

// ---- world 1 ----

CommWork LocalCommunicator::run_all_gather(const Tensor& input, Tensor& output) {
  if (input.data_ptr() != output.data_ptr()) {
    Tensor flat_output = output.flatten();
    ops::copy_(flat_output, input.flatten());
  }
  return {};
}

CommWork LocalCommunicator::run_reduce_scatter(const Tensor& input, Tensor& output, ReduceOp) {
  // One rank: its slice is the whole input, and the sum, average or max over one rank is the value.
  return run_all_gather(input, output);
}

CommWork LocalCommunicator::run_all_reduce(Tensor&, ReduceOp) {
  return {};
}

CommWork LocalCommunicator::run_broadcast(Tensor&, int) {
  return {};
}

// ---- factory ----

namespace {

// Whether CUDA tensors must be staged through MPI: true on every rank when on any node more ranks than GPUs
// share a node. Agreed over the group so that all ranks pick the same backend.
bool ranks_share_gpus(const ProcessGroup& group) {
  int local_shares = group.local_world_size() > ops::cuda_device_count() ? 1 : 0;
  if (!group.uses_mpi()) return local_shares != 0;
  int any_shares = 0;
  COAT_MPI_CHECK(MPI_Allreduce(&local_shares, &any_shares, 1, MPI_INT, MPI_LOR, group.mpi_comm()));
  return any_shares != 0;
}

std::unique_ptr<Communicator> make_nccl(const ProcessGroup& group, Device device,
                                        std::chrono::milliseconds timeout) {
  COAT_ARG_CHECK(device.is_cuda(), "make_communicator", "NCCL needs a CUDA device, not ", device.str());
#ifdef COAT_WITH_CUDA
  cuda::NcclOptions options;
  options.timeout = timeout;
  return std::make_unique<cuda::NcclCommunicator>(group, device, options);
#else
  (void)group;
  (void)timeout;
  throw NotImplemented(
      "[make_communicator] NCCL requested but this build has no CUDA backend (configure with "
      "-DCOAT_CUDA=ON on a machine with the CUDA toolkit and NCCL)");
#endif
}

}  // namespace

std::unique_ptr<Communicator> make_communicator(const ProcessGroup& group, Device device, CommunicatorKind kind,
                                                std::chrono::milliseconds collective_timeout) {
  switch (kind) {
    case CommunicatorKind::Local:
      COAT_ARG_CHECK(group.world_size() == 1, "make_communicator",
                     "the local communicator serves a world of 1, ", "not ", group.world_size(), " ranks");
      return std::make_unique<LocalCommunicator>();
    case CommunicatorKind::Mpi:
      COAT_ARG_CHECK(group.uses_mpi(), "make_communicator",
                     "the MPI communicator needs a group over MPI; this process was not launched by mpirun");
      return std::make_unique<MpiCommunicator>(group);
    case CommunicatorKind::Nccl:
      return make_nccl(group, device, collective_timeout);
    case CommunicatorKind::Auto:
      break;
  }
  if (group.world_size() == 1) return std::make_unique<LocalCommunicator>();
  if (device.is_cpu()) return std::make_unique<MpiCommunicator>(group);
  if (ranks_share_gpus(group)) {
    if (group.rank() == 0) {
      spdlog::info(
          "{} ranks share {} GPU(s) on a node: collectives are staged through host memory over MPI "
          "(NCCL needs a GPU per rank)",
          group.local_world_size(), ops::cuda_device_count());
    }
    return std::make_unique<MpiCommunicator>(group);
  }
  return make_nccl(group, device, collective_timeout);
}

}  // namespace coat::dist
