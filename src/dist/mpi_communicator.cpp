// MpiCommunicator: MPI moves the bytes, the sums are done here in rank order (see mpi_communicator.h for
// why), CUDA tensors go through host copies.
#include "coat/dist/mpi_communicator.h"

#include <climits>
#include <cmath>
#include <cstdint>

#include "coat/core/float_formats.h"
#include "coat/ops/copy.h"

namespace coat::dist {
namespace {

// MPI only moves the elements (reductions are ours), so a type of the element's size is all it needs.
MPI_Datatype mpi_element_type(DType dtype) {
  switch (dtype_size(dtype)) {
    case 8:
      return MPI_UINT64_T;
    case 4:
      return MPI_UINT32_T;
    case 2:
      return MPI_UINT16_T;
    default:
      return MPI_UINT8_T;
  }
}

int mpi_count(int64_t elements, const char* op) {
  COAT_CHECK(elements <= INT_MAX, NotImplemented, "[", op, "] ", elements,
             " elements per rank exceed MPI's int counts; split the tensor");
  return static_cast<int>(elements);
}

// max that keeps a NaN (a non-finite amax must reach every rank) and is the same on every rank.
template <typename T>
T max_keeping_nan(T a, T b) {
  if (std::isnan(a)) return a;
  if (std::isnan(b)) return b;
  return b > a ? b : a;
}

// out[i] <- blocks[0][i] (+) blocks[1][i] (+) ... (+) blocks[world-1][i], left to right: the fixed rank
// order that makes every rank's result, and every run's, the same bits. `blocks` holds world blocks of n.
template <typename Element, typename Acc, typename Load, typename Store, typename Add, typename Max>
void reduce_in_rank_order(const Tensor& blocks, int world, Tensor& out, ReduceOp op, Load load, Store store,
                          Add add, Max max) {
  const Element* in = blocks.data<Element>();
  Element* dst = out.data<Element>();
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i) {
    Acc acc = load(in[i]);
    for (int q = 1; q < world; ++q) {
      const Acc x = load(in[q * n + i]);
      acc = op == ReduceOp::Max ? max(acc, x) : add(acc, x);
    }
    if (op == ReduceOp::Average) acc = acc / static_cast<Acc>(world);
    dst[i] = store(acc);
  }
}

void reduce_blocks(const Tensor& blocks, int world, Tensor& out, ReduceOp op) {
  const auto same = [](auto x) { return x; };
  const auto plus = [](auto a, auto b) { return a + b; };
  const auto float_max = [](float a, float b) { return max_keeping_nan(a, b); };
  switch (out.dtype()) {
    case DType::F32:
      return reduce_in_rank_order<float, float>(blocks, world, out, op, same, same, plus, float_max);
    case DType::F64:
      return reduce_in_rank_order<double, double>(blocks, world, out, op, same, same, plus,
                                                  [](double a, double b) { return max_keeping_nan(a, b); });
    case DType::BF16:  // summed in float, rounded once
      return reduce_in_rank_order<uint16_t, float>(
          blocks, world, out, op, [](uint16_t b) { return bf16_to_float(b); },
          [](float x) { return float_to_bf16(x); }, plus, float_max);
    case DType::F16:
      return reduce_in_rank_order<uint16_t, float>(
          blocks, world, out, op, [](uint16_t b) { return f16_to_float(b); },
          [](float x) { return float_to_f16(x); }, plus, float_max);
    case DType::I32:  // wraps like the two's complement sum NCCL computes
      return reduce_in_rank_order<int32_t, int64_t>(
          blocks, world, out, op, [](int32_t x) { return int64_t{x}; },
          [](int64_t x) { return static_cast<int32_t>(static_cast<uint32_t>(x)); }, plus,
          [](int64_t a, int64_t b) { return b > a ? b : a; });
    case DType::I64:
      return reduce_in_rank_order<int64_t, int64_t>(
          blocks, world, out, op, same, same,
          [](int64_t a, int64_t b) {
            return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
          },
          [](int64_t a, int64_t b) { return b > a ? b : a; });
    default:
      throw NotImplemented(::coat::detail::concat("[mpi] no reduction for ", dtype_name(out.dtype())));
  }
}

}  // namespace

MpiCommunicator::MpiCommunicator(const ProcessGroup& group)
    : Communicator(group.rank(), group.world_size()),
      group_(group.duplicate()),
      host_(std::make_shared<CpuContext>()) {
  COAT_ARG_CHECK(group_.uses_mpi(), "MpiCommunicator",
                 "the group does not run over MPI (not launched by mpirun)");
}

void MpiCommunicator::barrier() {
  group_.barrier();
}

Tensor MpiCommunicator::to_host(const Tensor& t) const {
  return t.device().is_cpu() ? t : ops::to(t, host_);
}

Tensor MpiCommunicator::host_destination(const Tensor& dst) const {
  if (dst.device().is_cpu()) return dst;
  return Tensor::empty(host_, {dst.numel()}, dst.dtype(), MemoryCategory::Communication);
}

void MpiCommunicator::write_back(Tensor& dst, const Tensor& host) {
  if (dst.device().is_cpu()) return;
  Tensor flat = dst.flatten();
  ops::copy_(flat, host.flatten());
}

CommWork MpiCommunicator::run_all_gather(const Tensor& input, Tensor& output) {
  const int count = mpi_count(input.numel(), "all_gather");
  const MPI_Datatype type = mpi_element_type(input.dtype());
  Tensor out = host_destination(output);
  if (output.device().is_cpu() && input.data_ptr() == static_cast<std::byte*>(output.data_ptr()) +
                                                          static_cast<size_t>(rank()) * input.nbytes()) {
    COAT_MPI_CHECK(MPI_Allgather(MPI_IN_PLACE, 0, type, out.data_ptr(), count, type, group_.mpi_comm()));
  } else {
    const Tensor in = to_host(input);
    COAT_MPI_CHECK(MPI_Allgather(in.data_ptr(), count, type, out.data_ptr(), count, type, group_.mpi_comm()));
  }
  write_back(output, out);
  return {};
}

CommWork MpiCommunicator::run_reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) {
  const int count = mpi_count(output.numel(), "reduce_scatter");
  const MPI_Datatype type = mpi_element_type(input.dtype());
  const Tensor in = to_host(input);
  // Block q of `contributions` is rank q's slice for this rank. Alltoall reads all of `in` before anything
  // is written to `out`, so an in-place output is safe.
  Tensor contributions = Tensor::empty(host_, {input.numel()}, input.dtype(), MemoryCategory::Communication);
  COAT_MPI_CHECK(
      MPI_Alltoall(in.data_ptr(), count, type, contributions.data_ptr(), count, type, group_.mpi_comm()));
  Tensor out = host_destination(output);
  reduce_blocks(contributions, world_size(), out, op);
  write_back(output, out);
  return {};
}

CommWork MpiCommunicator::run_all_reduce(Tensor& tensor, ReduceOp op) {
  const int count = mpi_count(tensor.numel(), "all_reduce");
  const MPI_Datatype type = mpi_element_type(tensor.dtype());
  const Tensor in = to_host(tensor);
  Tensor everyone =
      Tensor::empty(host_, {tensor.numel() * world_size()}, tensor.dtype(), MemoryCategory::Communication);
  COAT_MPI_CHECK(
      MPI_Allgather(in.data_ptr(), count, type, everyone.data_ptr(), count, type, group_.mpi_comm()));
  Tensor out = host_destination(tensor);
  reduce_blocks(everyone, world_size(), out, op);
  write_back(tensor, out);
  return {};
}

CommWork MpiCommunicator::run_broadcast(Tensor& tensor, int root) {
  const int count = mpi_count(tensor.numel(), "broadcast");
  // The root's device bytes are already right: it sends a host copy and writes nothing back.
  const bool root_of_cuda_tensor = rank() == root && tensor.device().is_cuda();
  Tensor host = root_of_cuda_tensor ? to_host(tensor) : host_destination(tensor);
  COAT_MPI_CHECK(
      MPI_Bcast(host.data_ptr(), count, mpi_element_type(tensor.dtype()), root, group_.mpi_comm()));
  if (!root_of_cuda_tensor) write_back(tensor, host);
  return {};
}

}  // namespace coat::dist
