// CapturedGraph: the work a function queues on a CudaContext's stream, captured once into a CUDA graph and
// launched again as one unit: one host call instead of one per kernel, and shorter gaps between kernels on the
// GPU. What the work reads and writes is baked into the graph by address, so every tensor it touches must stay
// allocated, at the same address, for as long as the graph is launched (the caching allocator hands the
// capture's temporaries back to its cache as the eager run would: they are free again between launches and
// must not be handed to other live work that overlaps a launch). The work must queue everything on the
// context's stream and must not wait for the device (a stream or device synchronisation fails the capture).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <functional>

namespace coat::cuda {

class CudaContext;

class CapturedGraph {
 public:
  /// Runs `work` once under stream capture (relaxed mode: a cache miss of the allocator may still
  /// cudaMalloc) and instantiates the graph; nothing runs on the device yet. Throws CudaError naming the
  /// capture's failure (e.g. a synchronisation inside `work`); an exception from `work` ends the capture and
  /// propagates. The stream is usable again after either.
  CapturedGraph(CudaContext& ctx, const std::function<void()>& work);
  ~CapturedGraph();
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;

  /// Queues the captured work on the context's stream.
  void launch();
  /// Kernel, memset and memcpy nodes of the graph.
  size_t node_count() const { return nodes_; }

 private:
  CudaContext& ctx_;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
  size_t nodes_ = 0;
};

}  // namespace coat::cuda
