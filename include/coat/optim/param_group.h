// What the optimizer updates: segments of flat parameter buffers (named parameters are views into the
// units' flat buffers), each with its gradient view and whether weight decay applies to it.
#pragma once

#include <string>

#include "coat/core/tensor.h"

namespace coat::optim {

struct OptimSegment {
  Tensor param;      ///< F32, contiguous (a view into a flat master-weight buffer)
  Tensor grad;       ///< F32, contiguous, same shape as param
  bool decay = true; ///< apply weight decay to this segment
  std::string name;  ///< unique; names the state tensors ("<name>.exp_avg", "<name>.exp_avg_sq")
};

/// The default weight-decay choice for a parameter named as HF names it: no decay on norm weights (names
/// containing "norm") unless decay_norms, none on embeddings (names containing "embed_tokens") unless
/// decay_embeddings; everything else, lm_head included, decays.
bool default_decay(const std::string& hf_param_name, bool decay_embeddings, bool decay_norms);

}  // namespace coat::optim
