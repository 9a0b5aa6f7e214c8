// NcclCommunicator: NCCL collectives on a communication stream, events between it and the compute stream,
// and the watchdog thread that aborts a communicator NCCL reports broken or whose collective hangs.
#include "coat/backend/cuda/nccl_communicator.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"

namespace coat::cuda {

/// The NCCL communicator, aborted at most once by whoever sees the failure first (the watchdog thread,
/// abort(), or a destructor running during unwinding).
struct NcclCommunicator::CommHandle {
  ncclComm_t comm = nullptr;
  std::atomic<bool> aborted{false};
  std::mutex failure_mutex;
  std::string failure;  // why it was aborted; empty while healthy

  void abort_once(const std::string& why) {
    {
      std::lock_guard lock(failure_mutex);
      if (failure.empty()) failure = why;
    }
    if (!aborted.exchange(true)) ncclCommAbort(comm);
  }
  void throw_if_aborted(const char* op) {
    if (!aborted.load()) return;
    std::lock_guard lock(failure_mutex);
    throw NcclError(::coat::detail::concat("[", op, "] the NCCL communicator was aborted: ", failure));
  }
};

/// Polls ncclCommGetAsyncError (errors of running collectives surface nowhere else) and the oldest running
/// collective's completion event; on an error or a timeout it aborts the communicator, which makes the
/// collectives return on this rank and, through the broken connections, on the others.
class NcclCommunicator::Watchdog {
 public:
  Watchdog(std::shared_ptr<CommHandle> comm, int device, NcclOptions options)
      : comm_(std::move(comm)), device_(device), options_(options) {
    thread_ = std::thread([this] { run(); });
  }
  ~Watchdog() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void track(std::shared_ptr<Event> done, const char* op) {
    std::lock_guard lock(mutex_);
    running_.push_back({std::move(done), op, std::chrono::steady_clock::now()});
  }

 private:
  struct Running {
    std::shared_ptr<Event> done;
    const char* op;
    std::chrono::steady_clock::time_point queued;
  };

  void run() {
    if (cudaSetDevice(device_) != cudaSuccess) return;  // the constructor made this device work already
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      wake_.wait_for(lock, options_.poll_interval);
      if (stopping_ || comm_->aborted.load()) continue;
      std::string failure = async_error();
      if (failure.empty()) failure = timed_out();
      if (!failure.empty()) {
        spdlog::error("{}; aborting the NCCL communicator", failure);  // the rank: set_rank_log_prefix
        comm_->abort_once(failure);
      }
    }
  }

  std::string async_error() const {
    ncclResult_t result = ncclSuccess;
    if (ncclCommGetAsyncError(comm_->comm, &result) != ncclSuccess) return "ncclCommGetAsyncError failed";
    if (result == ncclSuccess || result == ncclInProgress) return "";
    return ::coat::detail::concat("NCCL reported an asynchronous error: ", ncclGetErrorString(result), " (",
                                  ncclGetLastError(comm_->comm), ")");
  }

  // Called with mutex_ held: drops the finished collectives (they finish in queue order: one stream).
  std::string timed_out() {
    while (!running_.empty() && running_.front().done->query()) running_.pop_front();
    if (running_.empty() || options_.timeout.count() <= 0) return "";
    const auto waited = std::chrono::steady_clock::now() - running_.front().queued;
    if (waited < options_.timeout) return "";
    return ::coat::detail::concat(running_.front().op, " did not finish within ", options_.timeout.count(),
                                  " ms (a rank stopped calling collectives, or the network hangs)");
  }

  std::shared_ptr<CommHandle> comm_;
  int device_;
  NcclOptions options_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::deque<Running> running_;
  std::thread thread_;  // last: starts after everything it reads exists
};

namespace {

/// A queued collective: later compute work can be ordered after it; keeps its tensors alive until then.
class NcclPending final : public dist::PendingCollective {
 public:
  NcclPending(std::shared_ptr<Event> done, cudaStream_t compute_stream, std::vector<Tensor> tensors)
      : done_(std::move(done)), compute_stream_(compute_stream), tensors_(std::move(tensors)) {}
  ~NcclPending() override {
    if (waited_) return;
    // Ordering the compute stream after the collective before the tensors are released keeps the caching
    // allocator from handing their memory to compute work while NCCL still reads or writes it.
    if (cudaStreamWaitEvent(compute_stream_, done_->get(), 0) != cudaSuccess) {
      spdlog::error("[nccl] could not order the compute stream after a collective; synchronising instead");
      (void)cudaEventSynchronize(done_->get());
    }
  }
  NcclPending(const NcclPending&) = delete;
  NcclPending& operator=(const NcclPending&) = delete;

  void make_compute_wait() override {
    COAT_CUDA_CHECK(cudaStreamWaitEvent(compute_stream_, done_->get(), 0));
    waited_ = true;
  }
  void synchronize() override {
    done_->synchronize();
    waited_ = true;  // done: nothing left to order
  }
  bool is_complete() const override { return done_->query(); }

 private:
  std::shared_ptr<Event> done_;
  cudaStream_t compute_stream_;  // alive as long as tensors_ keep their context
  std::vector<Tensor> tensors_;
  bool waited_ = false;
};

Device make_current(Device device) {
  COAT_ARG_CHECK(device.is_cuda(), "NcclCommunicator", "needs a CUDA device, not ", device.str());
  COAT_CUDA_CHECK(cudaSetDevice(device.index));
  return device;
}

ncclDataType_t nccl_reduction_type(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return ncclFloat32;
    case DType::F64:
      return ncclFloat64;
    case DType::BF16:
      return ncclBfloat16;
    case DType::F16:
      return ncclFloat16;
    case DType::I32:
      return ncclInt32;
    case DType::I64:
      return ncclInt64;
    default:
      throw NotImplemented(::coat::detail::concat("[nccl] no reduction for ", dtype_name(dtype)));
  }
}

ncclRedOp_t nccl_op(dist::ReduceOp op) {
  switch (op) {
    case dist::ReduceOp::Sum:
      return ncclSum;
    case dist::ReduceOp::Average:
      return ncclAvg;
    case dist::ReduceOp::Max:
      return ncclMax;
  }
  return ncclSum;
}

}  // namespace

NcclCommunicator::NcclCommunicator(const dist::ProcessGroup& group, Device device, NcclOptions options)
    : Communicator(group.rank(), group.world_size()),
      group_(group.duplicate()),
      device_(make_current(device)),
      comm_(std::make_shared<CommHandle>()) {
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (group_.rank() == 0) COAT_NCCL_CHECK(ncclGetUniqueId(&id));
  group_.broadcast_bytes(std::as_writable_bytes(std::span(&id, 1)), 0);
  COAT_NCCL_CHECK(ncclCommInitRank(&comm_->comm, group_.world_size(), id, group_.rank()));
  watchdog_ = std::make_unique<Watchdog>(comm_, device_.index, options);
}

NcclCommunicator::~NcclCommunicator() {
  watchdog_.reset();                  // no abort from the thread while the communicator goes
  if (comm_->aborted.load()) return;  // ncclCommAbort freed it
  if (std::uncaught_exceptions() > 0) {
    // This rank is failing: its peers may never join the collectives still queued, so waiting would hang.
    comm_->abort_once("destroyed during an exception");
    return;
  }
  (void)cudaSetDevice(device_.index);
  (void)cudaStreamSynchronize(stream_.get());
  ncclCommDestroy(comm_->comm);
}

void NcclCommunicator::barrier() {
  group_.barrier();
}

void NcclCommunicator::abort() {
  comm_->abort_once("aborted by the caller");
}

template <typename Collective>
dist::CommWork NcclCommunicator::enqueue(const char* op, const Tensor& input, const Tensor& output,
                                         Collective&& collective) {
  comm_->throw_if_aborted(op);
  COAT_ARG_CHECK(input.device() == device_, op, "tensor on ", input.device().str(),
                 " but the NCCL communicator is on ", device_.str());
  auto* context = dynamic_cast<CudaContext*>(input.context().get());
  COAT_ARG_CHECK(context != nullptr, op, "tensor on ", input.device().str(), " has no CUDA context");
  COAT_CUDA_CHECK(cudaSetDevice(device_.index));
  // The collective reads what the compute stream wrote: the communication stream waits for it on the
  // device, the host goes on.
  Event inputs_ready;
  inputs_ready.record(context->stream());
  stream_.wait(inputs_ready);
  collective(stream_.get());
  auto done = std::make_shared<Event>();
  done->record(stream_);
  watchdog_->track(done, op);
  return dist::CommWork(
      std::make_unique<NcclPending>(std::move(done), context->stream(), std::vector<Tensor>{input, output}));
}

dist::CommWork NcclCommunicator::run_all_gather(const Tensor& input, Tensor& output) {
  // Bytes, not elements: every dtype gathers (FP8 codes included) and counts are size_t.
  return enqueue("all_gather", input, output, [&](cudaStream_t stream) {
    COAT_NCCL_CHECK(
        ncclAllGather(input.data_ptr(), output.data_ptr(), input.nbytes(), ncclUint8, comm_->comm, stream));
  });
}

dist::CommWork NcclCommunicator::run_reduce_scatter(const Tensor& input, Tensor& output, dist::ReduceOp op) {
  const ncclDataType_t type = nccl_reduction_type(input.dtype());
  return enqueue("reduce_scatter", input, output, [&](cudaStream_t stream) {
    COAT_NCCL_CHECK(ncclReduceScatter(input.data_ptr(), output.data_ptr(),
                                      static_cast<size_t>(output.numel()), type, nccl_op(op), comm_->comm,
                                      stream));
  });
}

dist::CommWork NcclCommunicator::run_all_reduce(Tensor& tensor, dist::ReduceOp op) {
  const ncclDataType_t type = nccl_reduction_type(tensor.dtype());
  return enqueue("all_reduce", tensor, tensor, [&](cudaStream_t stream) {
    COAT_NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                                  type, nccl_op(op), comm_->comm, stream));
  });
}

dist::CommWork NcclCommunicator::run_broadcast(Tensor& tensor, int root) {
  return enqueue("broadcast", tensor, tensor, [&](cudaStream_t stream) {
    COAT_NCCL_CHECK(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.nbytes(), ncclUint8, root,
                                  comm_->comm, stream));
  });
}

}  // namespace coat::cuda
