// Host values through small tensors: copied bit for bit (no conversion through double), so that 64-bit sizes
// and checksums arrive exact.
#include "coat/dist/host_collectives.h"

#include <cstring>

#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"

namespace coat::dist {
namespace {

// A tensor on `context`'s device holding `bytes` bytes of `data` as `dtype`.
Tensor to_device(const ContextPtr& context, const void* data, int64_t count, DType dtype) {
  Tensor host = Tensor::empty(ops::make_context(Device::cpu()), {count}, dtype, MemoryCategory::Other);
  if (count > 0) std::memcpy(host.data_ptr(), data, host.nbytes());
  return context->device().is_cpu() ? host : ops::to(host, context);
}

// The tensor's bytes into `data`.
void to_host(const Tensor& t, void* data) {
  const Tensor host = t.device().is_cpu() ? t : ops::to(t, ops::make_context(Device::cpu()));
  if (host.numel() > 0) std::memcpy(data, host.data_ptr(), host.nbytes());
}

}  // namespace

std::vector<int64_t> all_gather_values(Communicator* comm, const ContextPtr& context,
                                       const std::vector<int64_t>& values) {
  if (comm == nullptr) return values;
  const int64_t n = static_cast<int64_t>(values.size());
  std::vector<int64_t> out(values.size() * static_cast<size_t>(comm->world_size()));
  if (n == 0) return out;
  const Tensor mine = to_device(context, values.data(), n, DType::I64);
  Tensor all = Tensor::empty(context, {n * comm->world_size()}, DType::I64, MemoryCategory::Other);
  comm->all_gather(mine, all).synchronize();
  to_host(all, out.data());
  return out;
}

std::vector<int64_t> broadcast_values(Communicator* comm, const ContextPtr& context,
                                      std::vector<int64_t> values, int root) {
  if (comm == nullptr || values.empty()) return values;
  Tensor t = to_device(context, values.data(), static_cast<int64_t>(values.size()), DType::I64);
  comm->broadcast(t, root).synchronize();
  to_host(t, values.data());
  return values;
}

std::string broadcast_text(Communicator* comm, const ContextPtr& context, const std::string& text, int root) {
  if (comm == nullptr) return text;
  const int64_t length = broadcast_values(comm, context, {static_cast<int64_t>(text.size())}, root)[0];
  std::string out(static_cast<size_t>(length), '\0');
  if (length == 0) return out;
  Tensor t = comm->rank() == root ? to_device(context, text.data(), length, DType::U8)
                                  : Tensor::empty(context, {length}, DType::U8, MemoryCategory::Other);
  comm->broadcast(t, root).synchronize();
  to_host(t, out.data());
  return out;
}

}  // namespace coat::dist
