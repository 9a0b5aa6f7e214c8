// Element-wise binary operations, computed in double and rounded once (see element_access.h).
#pragma once

#include <string_view>

#include "coat/core/host_device.h"

namespace coat {

enum class BinaryOp { Add, Sub, Mul };

COAT_HOST_DEVICE inline double apply_binary(BinaryOp op, double a, double b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
  }
  return 0.0;
}

inline std::string_view binary_op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
  }
  return "?";
}

}  // namespace coat
