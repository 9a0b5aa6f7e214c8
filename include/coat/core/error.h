// Typed exceptions with context, and the checking macro used across the library.
// Messages read like "[matmul] shapes (3,4) and (5,6) do not match".
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace coat {

/// Base of every error the library throws.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// A caller passed something invalid (shape, dtype, device, argument value).
class InvalidArgument : public Error {
  using Error::Error;
};
/// An op has no kernel for the requested device or dtype.
class NotImplemented : public Error {
  using Error::Error;
};
/// A device allocation failed even after the cache was released.
class OutOfMemory : public Error {
  using Error::Error;
};
/// Errors reported by a library or the runtime (CUDA, cuBLAS, cuDNN, NCCL, MPI, files).
class CudaError : public Error {
  using Error::Error;
};
class CublasError : public Error {
  using Error::Error;
};
class CudnnError : public Error {
  using Error::Error;
};
class NcclError : public Error {
  using Error::Error;
};
class MpiError : public Error {
  using Error::Error;
};
class IoError : public Error {
  using Error::Error;
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}
}  // namespace detail

}  // namespace coat

/// COAT_CHECK(cond, ExceptionType, message parts...): throws ExceptionType with the parts joined.
#define COAT_CHECK(cond, ExceptionType, ...)                            \
  do {                                                                  \
    if (!(cond)) throw ExceptionType(::coat::detail::concat(__VA_ARGS__)); \
  } while (0)

/// COAT_ARG_CHECK(cond, "op", message parts...): an InvalidArgument prefixed with [op].
#define COAT_ARG_CHECK(cond, op, ...) \
  COAT_CHECK(cond, ::coat::InvalidArgument, "[", op, "] ", __VA_ARGS__)
