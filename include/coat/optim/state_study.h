// The quantization-error study of COAT's Table 1: how well each FP8 storage of AdamW's moments preserves
// the update direction m / (sqrt(v) + eps), measured on real optimizer states.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "coat/core/tensor.h"
#include "coat/ops/quantized_moment.h"

namespace coat::optim {

/// One storage choice for a moment, with its table label ("E4M3", "E4M3+Expand", ...).
struct StudyFormat {
  std::string label;
  ops::MomentSpec spec;
};

/// E4M3, E4M3+Expand, E5M2, E5M2+Expand with groups of `group_size` (the rows and columns of Table 1).
std::vector<StudyFormat> table1_formats(int64_t group_size);

struct StudyTable {
  std::vector<std::string> labels;         ///< formats, in order
  std::vector<std::vector<double>> mse;    ///< mse[i][j]: first moment in labels[i], second in labels[j]
  std::vector<double> mse_m;               ///< MSE of m alone per format
  std::vector<double> mse_v;               ///< MSE of v alone per format
  double mean_square_update = 0.0;         ///< mean of (m / (sqrt(v) + eps))^2 with the original states
  int64_t elements = 0;
};

/// For every (m format, v format) pair: quantises each (m, v) pair of F32 tensors (flattened; groups start
/// at each tensor's first element), dequantises, and averages (r_q - r)^2 over all elements, where
/// r = m / (sqrt(v) + eps). Pairs: same numel, F32, any device.
StudyTable quantization_study(const std::vector<std::pair<Tensor, Tensor>>& moments,
                              const std::vector<StudyFormat>& formats, double eps);

/// The table as text: one row per first-moment format, one column per second-moment format.
std::string format_study(const StudyTable& table);

}  // namespace coat::optim
