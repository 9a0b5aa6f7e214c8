// Device-agnostic softmax cross-entropy fused with the logits' gradient. Its sums stay on the logits' device
// (no host synchronisation in the op on CUDA); CrossEntropyResult::read() is the one read-back.
#pragma once

#include <cstdint>

#include "coat/core/tensor.h"

namespace coat::ops {

/// The block the backends write on the logits' device: 40 bytes, read back in one copy. The first three
/// words are doubles so that ops::add_ can sum the totals of several calls on the device (a count stays
/// exact below 2^53 tokens).
struct CrossEntropySums {
  double loss_sum;       ///< sum over counted rows of (logsumexp(logits) - logits[target]), in double
  double count;          ///< rows whose target is not ignore_index
  double bad_rows;       ///< rows whose target is neither ignore_index nor in [0, V) (the CPU throws at once)
  int64_t bad_position;  ///< the first such row, -1 when none
  int64_t bad_target;    ///< its target (0 when none)
};
static_assert(sizeof(CrossEntropySums) == 5 * sizeof(int64_t), "CrossEntropySums is five 8-byte words");
inline constexpr int64_t kCrossEntropySumsWords = 5;

/// What the host reads of one cross-entropy or of accumulated totals.
struct CrossEntropyValues {
  double loss_sum = 0.0;
  int64_t count = 0;
};

struct CrossEntropyResult {
  Tensor sums;      ///< I64 [5] on the logits' device holding a CrossEntropySums
  Tensor loss_sum;  ///< F64 [1]: view of sums' loss_sum
  Tensor count;     ///< F64 [1]: view of sums' count (a double, see CrossEntropySums)
  Tensor dlogits;   ///< (softmax - onehot(target)) * grad_scale, logits' shape and dtype; 0 on ignored rows
  int64_t vocab = 0;
  int64_t ignore_index = 0;

  /// F64 [3] view {loss_sum, count, bad_rows}: what a caller adds up across calls with ops::add_ and reads
  /// once with read_totals.
  Tensor totals() const;
  /// The sums read back (one copy: a device synchronisation on CUDA). A target outside [0, V) other than
  /// ignore_index is an InvalidArgument naming the first one and its position.
  CrossEntropyValues read() const;
};

/// logits [N, V] (or [..., V]; f32, f64 or bf16), targets [N] (the leading shape; i32 or i64). Rows whose
/// target == ignore_index are skipped (their dlogits row is 0); any other target outside [0, V) is an
/// InvalidArgument naming it: thrown here on the CPU, which reads the targets anyway, and by read() on CUDA,
/// where the check stays on the device. dlogits is left undefined when compute_grad is false.
CrossEntropyResult cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                 double grad_scale, bool compute_grad = true);

/// Totals added up from several results' totals() (F64 [3], any device), read back once. Throws
/// InvalidArgument when some target was bad (counted; positions do not survive the sum, read() names them).
CrossEntropyValues read_totals(const Tensor& totals, int64_t vocab, int64_t ignore_index);

}  // namespace coat::ops
