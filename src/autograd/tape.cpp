#include "coat/autograd/tape.h"

#include <set>
#include <utility>

#include "coat/core/nvtx.h"
#include "coat/ops/copy.h"
#include "coat/ops/elementwise.h"

namespace coat::autograd {

int64_t Tape::new_slot() {
  grads_.emplace_back();
  is_leaf_.push_back(false);
  return static_cast<int64_t>(grads_.size()) - 1;
}

Var Tape::leaf(Tensor value, bool requires_grad) {
  Var v{std::move(value), -1};
  if (requires_grad) {
    v.slot = new_slot();
    is_leaf_[static_cast<size_t>(v.slot)] = true;
  }
  return v;
}

Var Tape::record(std::string name, Tensor output, std::vector<Var> inputs, std::vector<Tensor> saved,
                 BackwardFn backward, bool force_grad) {
  if (!grad_enabled_) return Var{std::move(output), -1};
  bool needs = force_grad;
  std::vector<int64_t> in_slots;
  in_slots.reserve(inputs.size());
  for (const Var& in : inputs) {
    in_slots.push_back(in.slot);
    needs = needs || in.requires_grad();
  }
  Var out{std::move(output), -1};
  if (!needs) return out;  // nothing to differentiate: keep nothing
  out.slot = new_slot();
  nodes_.push_back(Node{std::move(name), out.slot, std::move(in_slots), std::move(saved), std::move(backward), {}});
  return out;
}

void Tape::hook(std::string name, std::function<void()> on_backward) {
  if (!grad_enabled_) return;
  nodes_.push_back(Node{std::move(name), -1, {}, {}, {}, std::move(on_backward)});
}

void Tape::accumulate(int64_t slot, const Tensor& g) {
  if (slot < 0 || !g.defined()) return;
  Tensor& acc = grads_[static_cast<size_t>(slot)];
  if (!acc.defined()) {
    acc = g;
  } else {
    // A value used twice (the residual stream): its gradients add. Never add into a tensor we do not own.
    acc = ops::add(acc, g);
  }
}

void Tape::backward(const Var& root, const Tensor& grad_root) {
  COAT_ARG_CHECK(root.requires_grad(), "backward", "the root does not depend on anything that needs a gradient");
  COAT_ARG_CHECK(grad_root.shape() == root.shape(), "backward", "seed gradient shape ", shape_str(grad_root.shape()),
                 " differs from the root's ", shape_str(root.shape()));
  accumulate(root.slot, grad_root);
  std::string range_name;  // "<node name> bwd" for NVTX: one buffer reused by every node
  for (size_t i = nodes_.size(); i-- > 0;) {
    Node& node = nodes_[i];
    if (node.hook) {
      node.hook();
      continue;
    }
    Tensor g = std::move(grads_[static_cast<size_t>(node.out_slot)]);
    grads_[static_cast<size_t>(node.out_slot)] = Tensor();
    if (g.defined()) {
      if constexpr (kNvtxEnabled) range_name.assign(node.name).append(" bwd");
      const NvtxRange range(range_name.c_str());
      Grads in_grads = node.backward(g, node.saved);
      COAT_CHECK(in_grads.size() == node.in_slots.size(), Error, "[", node.name, "] backward returned ", in_grads.size(),
                 " gradients for ", node.in_slots.size(), " inputs");
      for (size_t k = 0; k < in_grads.size(); ++k) {
        if (node.in_slots[k] >= 0 && in_grads[k].defined()) {
          accumulate(node.in_slots[k], in_grads[k]);
        }
      }
    }
    node.saved.clear();  // free saved activations as soon as they are used
  }
  leaf_grads_.assign(grads_.size(), Tensor());
  for (size_t s = 0; s < grads_.size(); ++s) {
    if (is_leaf_[s]) leaf_grads_[s] = grads_[s];
  }
  nodes_.clear();
  grads_.clear();
  is_leaf_.clear();
}

Tensor Tape::take_grad(const Var& v) {
  if (v.slot < 0 || static_cast<size_t>(v.slot) >= grads_.size()) return Tensor();
  Tensor& g = grads_[static_cast<size_t>(v.slot)];
  Tensor out = std::move(g);
  g = Tensor();
  return out;
}

Tensor Tape::grad(const Var& v) const {
  if (v.slot < 0 || static_cast<size_t>(v.slot) >= leaf_grads_.size()) return Tensor();
  return leaf_grads_[static_cast<size_t>(v.slot)];
}

namespace {
size_t bytes_of(const std::vector<Tensor>& tensors, std::set<const void*>& seen) {
  size_t total = 0;
  for (const Tensor& t : tensors) {
    if (!t.defined() || !seen.insert(t.storage().get()).second) continue;
    total += t.storage()->bytes();
  }
  return total;
}
}  // namespace

size_t Tape::saved_bytes() const {
  std::set<const void*> seen;
  size_t total = 0;
  for (const Node& n : nodes_) total += bytes_of(n.saved, seen);
  return total;
}

size_t Tape::saved_bytes(const std::string& name) const {
  std::set<const void*> seen;
  size_t total = 0;
  for (const Node& n : nodes_) {
    if (n.name == name) total += bytes_of(n.saved, seen);
  }
  return total;
}

void Tape::clear() {
  nodes_.clear();
  grads_.clear();
  is_leaf_.clear();
  leaf_grads_.clear();
}

}  // namespace coat::autograd
