// Per-unit hooks of a forward and its backward: what a caller does at each unit's boundaries (gather a
// sharded unit before its use and free it after, reduce its gradients, apply the optimizer as soon as they
// are complete). Transformer::forward calls them in the order the units run:
//   forward:  before_forward(u) ... the unit's functions ... after_forward(u)
//   backward: before_backward(u) ... the unit's backward (a recomputed block runs again here) ...
//             after_backward(u): the unit's gradients are complete for this micro-batch
// The embedding's unit, whose matrix a tied LM head uses again at the end, stays in use from the embedding to
// the head in the forward, and from the head's backward to the embedding's in the backward.
#pragma once

#include <cstddef>
#include <vector>

namespace coat::models {

class UnitHooks {
 public:
  virtual ~UnitHooks() = default;
  virtual void before_forward(size_t /*unit*/) {}
  virtual void after_forward(size_t /*unit*/) {}
  virtual void before_backward(size_t /*unit*/) {}
  virtual void after_backward(size_t /*unit*/) {}
};

/// Several hooks in order (each event goes to every hook, first to last). Not owning.
class UnitHookChain final : public UnitHooks {
 public:
  explicit UnitHookChain(std::vector<UnitHooks*> hooks) : hooks_(std::move(hooks)) {}
  void before_forward(size_t unit) override {
    for (UnitHooks* h : hooks_) h->before_forward(unit);
  }
  void after_forward(size_t unit) override {
    for (UnitHooks* h : hooks_) h->after_forward(unit);
  }
  void before_backward(size_t unit) override {
    for (UnitHooks* h : hooks_) h->before_backward(unit);
  }
  void after_backward(size_t unit) override {
    for (UnitHooks* h : hooks_) h->after_backward(unit);
  }

 private:
  std::vector<UnitHooks*> hooks_;
};

}  // namespace coat::models
