// Causal self-attention core with grouped KV heads: softmax(q k^T * scale + causal mask) v on
// q [B,T,Hq,Dh], k and v [B,T,Hkv,Dh]. Saves q, k, v, the output and the per-row log-sum-exp (what a flash
// attention backward needs); the probabilities are recomputed, never stored.
#pragma once

#include "coat/autograd/tape.h"

namespace coat::nn {

autograd::Var attention(autograd::Tape& tape, const autograd::Var& q, const autograd::Var& k, const autograd::Var& v,
                        double scale);

}  // namespace coat::nn
