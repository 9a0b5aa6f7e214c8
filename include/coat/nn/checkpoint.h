// Activation recomputation (gradient checkpointing): run a function of one value without keeping its
// intermediate activations, and run it again in the backward.
#pragma once

#include <functional>

#include "coat/autograd/tape.h"

namespace coat::nn {

/// A function of one value that records its work onto the tape it is given (e.g. a transformer block).
using CheckpointedFn = std::function<autograd::Var(autograd::Tape&, const autograd::Var&)>;

/// y = fn(x), recorded as ONE node "checkpoint" that saves only x (x.value's storage).
///
/// Forward: fn runs on a tape with gradients off, so none of its functions keep anything and its
/// intermediates are freed as soon as fn no longer holds them. Backward: fn runs again on x with a fresh
/// tape with gradients on (its hooks, if any, are recorded there), and that tape's backward is seeded
/// with the gradient of y: parameter gradients accumulate into the parameters' buffers exactly once, in the
/// same order and with the same arithmetic as without recomputation, and x's gradient is handed on.
/// The hooks the caller records around the checkpoint on the outer tape fire in the usual place (after the
/// whole recomputed backward of fn). fn must be deterministic (no dropout or random state) and must
/// depend on nothing that changes between the forward and the backward.
///
/// `force_grad`: record the node even when x needs no gradient (fn has parameters with gradients, as
/// tape.record's force_grad). On a tape with gradients off this is just fn(tape, x).
autograd::Var checkpoint(autograd::Tape& tape, const autograd::Var& x, CheckpointedFn fn,
                         bool force_grad = true);

}  // namespace coat::nn
