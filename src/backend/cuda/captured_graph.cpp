// CapturedGraph (design in captured_graph.h).
#include "coat/backend/cuda/captured_graph.h"

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"

namespace coat::cuda {

CapturedGraph::CapturedGraph(CudaContext& ctx, const std::function<void()>& work) : ctx_(ctx) {
  ctx.make_current();
  cudaStream_t stream = ctx.stream();
  COAT_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
  try {
    work();
  } catch (...) {
    cudaGraph_t broken = nullptr;
    (void)cudaStreamEndCapture(stream, &broken);  // the stream leaves capture mode whatever happened
    if (broken != nullptr) (void)cudaGraphDestroy(broken);
    (void)cudaGetLastError();  // clears the capture error the failed call left as the last error
    throw;
  }
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph_);
  if (ended != cudaSuccess) {
    if (graph_ != nullptr) (void)cudaGraphDestroy(graph_);
    (void)cudaGetLastError();
    detail::throw_cuda_error(ended, "cudaStreamEndCapture (the captured work synchronised or left the stream?)",
                             __FILE__, __LINE__);
  }
  try {
    COAT_CUDA_CHECK(cudaGraphGetNodes(graph_, nullptr, &nodes_));
    COAT_CUDA_CHECK(cudaGraphInstantiate(&exec_, graph_, 0));
  } catch (...) {
    (void)cudaGraphDestroy(graph_);
    throw;
  }
}

CapturedGraph::~CapturedGraph() {
  if (exec_ != nullptr) (void)cudaGraphExecDestroy(exec_);
  if (graph_ != nullptr) (void)cudaGraphDestroy(graph_);
}

void CapturedGraph::launch() {
  COAT_CUDA_CHECK(cudaGraphLaunch(exec_, ctx_.stream()));
}

}  // namespace coat::cuda
