// COAT_MPI_CHECK(call): a failing MPI call throws coat::MpiError naming the call, file:line and
// MPI_Error_string's text. (MPI's default handler aborts; set MPI_ERRORS_RETURN on the communicator to see
// it.)
#pragma once

// Only the C API is used: skip the deprecated C++ bindings (removed in MPI-3; they also warn under -Wextra).
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include "coat/core/error.h"

namespace coat::dist::detail {
[[noreturn]] void throw_mpi_error(int status, const char* call, const char* file, int line);
}  // namespace coat::dist::detail

#define COAT_MPI_CHECK(call)                                                          \
  do {                                                                                \
    const int coat_status_ = (call);                                                  \
    if (coat_status_ != MPI_SUCCESS)                                                  \
      ::coat::dist::detail::throw_mpi_error(coat_status_, #call, __FILE__, __LINE__); \
  } while (0)
