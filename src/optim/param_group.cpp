// Parameter segments: the default weight-decay rule.
#include "coat/optim/param_group.h"

namespace coat::optim {

bool default_decay(const std::string& hf_param_name, bool decay_embeddings, bool decay_norms) {
  if (hf_param_name.find("norm") != std::string::npos) return decay_norms;
  if (hf_param_name.find("embed_tokens") != std::string::npos) return decay_embeddings;
  return true;
}

}  // namespace coat::optim
