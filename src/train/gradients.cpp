#include "coat/train/gradients.h"

#include <vector>

#include "coat/autograd/tape.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"

namespace coat::train {

TokenBatch read_windows(const data::TokenFile& tokens, int64_t first_window, int64_t rows, int64_t seq,
                        int64_t model_vocab, const ContextPtr& context) {
  COAT_ARG_CHECK(first_window >= 0 && rows > 0 && seq > 0, "read_windows", "first window ", first_window,
                 ", rows ", rows, " and seq ", seq, ": expected first window >= 0 and positive rows and seq");
  const uint64_t needed = static_cast<uint64_t>((first_window + rows) * seq + 1);
  if (tokens.size() < needed) {
    throw InvalidArgument(detail::concat("token file '", tokens.path().string(), "' holds ", tokens.size(),
                                         " tokens; windows ", first_window, "..", first_window + rows - 1,
                                         " of ", seq + 1, " tokens need ", needed));
  }
  std::vector<int32_t> window(static_cast<size_t>(seq + 1));
  std::vector<double> ids(static_cast<size_t>(rows * seq)), targets(static_cast<size_t>(rows * seq));
  for (int64_t r = 0; r < rows; ++r) {
    tokens.read(static_cast<uint64_t>((first_window + r) * seq), window, static_cast<uint32_t>(model_vocab));
    for (int64_t t = 0; t < seq; ++t) {
      ids[static_cast<size_t>(r * seq + t)] = window[static_cast<size_t>(t)];
      targets[static_cast<size_t>(r * seq + t)] = window[static_cast<size_t>(t + 1)];
    }
  }
  return TokenBatch{ops::from_vector(context, {rows, seq}, DType::I32, ids),
                    ops::from_vector(context, {rows, seq}, DType::I32, targets)};
}

GradientResult compute_gradients(models::Transformer& model, const TokenBatch& batch) {
  COAT_ARG_CHECK(!model.parameters().empty() && model.parameters()[0].grad.defined(), "compute_gradients",
                 "the model has no gradient buffers (build it with with_grads = true)");
  COAT_ARG_CHECK(batch.ids.shape() == batch.targets.shape() && batch.ids.dim() == 2, "compute_gradients",
                 "ids ", shape_str(batch.ids.shape()), " and targets ", shape_str(batch.targets.shape()),
                 ": expected one [rows, seq] shape");
  model.zero_grad();
  autograd::Tape tape;
  const double grad_scale = 1.0 / static_cast<double>(batch.targets.numel());
  nn::LossOutput out = model.forward(tape, batch.ids, batch.targets, /*ignore_index=*/-1, grad_scale);
  tape.backward(out.root, nn::loss_seed());
  model.finish_grads();
  const ops::CrossEntropyValues sums = out.read();
  GradientResult r;
  r.tokens = sums.count;
  r.loss = sums.count > 0 ? sums.loss_sum / static_cast<double>(sums.count) : 0.0;
  return r;
}

}  // namespace coat::train
