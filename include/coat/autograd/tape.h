// Autograd-lite: a tape of layer-level functions (a whole RMSNorm, a whole attention), not scalar ops.
// Each function records one node: its output, its inputs, the tensors it chose to keep for backward (its
// save policy, visible to the tape so saved bytes can be counted) and its hand-written backward.
// backward() walks the nodes in reverse order, sums gradients that meet at one value, and calls each
// node's backward with its output's gradient. Parameter gradients are accumulated by the functions
// themselves into the parameters' gradient buffers (so they sum across micro-batches).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "coat/core/tensor.h"

namespace coat::autograd {

/// A value on the tape: a tensor and the slot that will hold its gradient.
struct Var {
  Tensor value;
  int64_t slot = -1;  ///< -1: a constant (no gradient flows into it)
  bool requires_grad() const { return slot >= 0; }
  const Shape& shape() const { return value.shape(); }
};

/// The inputs' gradients a backward returns, one per input (undefined where none flows).
using Grads = std::vector<Tensor>;
/// backward(grad_output, saved) -> gradients of the inputs.
using BackwardFn = std::function<Grads(const Tensor& grad_output, const std::vector<Tensor>& saved)>;

class Tape {
 public:
  /// A tape with grad_enabled == false records nothing: functions run forward only and keep nothing
  /// (evaluation and generation).
  explicit Tape(bool grad_enabled = true) : grad_enabled_(grad_enabled) {}
  bool grad_enabled() const { return grad_enabled_; }

  /// A leaf: a constant input (requires_grad false) or a value whose gradient the caller reads back.
  Var leaf(Tensor value, bool requires_grad = false);

  /// Records a function application. `saved` is what the function keeps for its backward (counted by
  /// saved_bytes()); the returned Var needs a gradient when any input does or `force_grad` is set
  /// (functions with parameters set it).
  Var record(std::string name, Tensor output, std::vector<Var> inputs, std::vector<Tensor> saved, BackwardFn backward,
             bool force_grad = false);

  /// A hook at a unit (block) boundary: `on_backward` runs when backward reaches this point, i.e. after
  /// every node recorded later has run its backward. FSDP uses these to reduce a block's gradients.
  void hook(std::string name, std::function<void()> on_backward);

  /// Runs backward from `root` seeded with `grad_root` (same shape as root), then clears the tape. The seed
  /// may live on another device than the root (it is only handed to the root's backward): the seed of a
  /// scalar loss should be a host tensor (nn::loss_seed()), which the loss's backward reads as a number
  /// without waiting for the device.
  void backward(const Var& root, const Tensor& grad_root);

  /// The gradient that reached a leaf during the last backward (undefined when none did).
  Tensor grad(const Var& v) const;

  /// During backward, for a node's backward function: hands over the gradient that v's other uses have
  /// given it so far (undefined when none has) and leaves none behind. The backward then returns its own
  /// gradient for v with this one already added (in the same kernel, e.g. a norm's dx plus the residual
  /// stream's), which the tape stores as it would have stored the sum of the two.
  Tensor take_grad(const Var& v);

  /// Bytes of the tensors the recorded nodes keep for backward (distinct storages counted once).
  size_t saved_bytes() const;
  /// Bytes kept by nodes whose name is `name`.
  size_t saved_bytes(const std::string& name) const;
  size_t size() const { return nodes_.size(); }
  /// Drops every node and gradient (after a forward-only pass, e.g. evaluation).
  void clear();

 private:
  struct Node {
    std::string name;
    int64_t out_slot = -1;
    std::vector<int64_t> in_slots;
    std::vector<Tensor> saved;
    BackwardFn backward;
    std::function<void()> hook;
  };
  int64_t new_slot();
  void accumulate(int64_t slot, const Tensor& g);

  bool grad_enabled_ = true;
  std::vector<Node> nodes_;
  std::vector<Tensor> grads_;        // by slot
  std::vector<Tensor> leaf_grads_;   // kept after backward for leaves that asked for a gradient
  std::vector<bool> is_leaf_;
};

}  // namespace coat::autograd
