// The throwing half of COAT_MPI_CHECK.
#include "coat/dist/mpi_check.h"

namespace coat::dist::detail {

void throw_mpi_error(int status, const char* call, const char* file, int line) {
  // MPI_Error_string is only safe while MPI is initialised; MPI_Initialized/MPI_Finalized always are.
  int initialized = 0;
  int finalized = 0;
  (void)MPI_Initialized(&initialized);
  (void)MPI_Finalized(&finalized);
  std::string message = "no error string (MPI not initialised)";
  if (initialized && !finalized) {
    char text[MPI_MAX_ERROR_STRING] = {};
    int length = 0;
    if (MPI_Error_string(status, text, &length) == MPI_SUCCESS && length > 0) {
      message.assign(text, static_cast<size_t>(length));
    } else {
      message = "unknown MPI error";
    }
  }
  throw MpiError(::coat::detail::concat("[mpi] ", call, " failed at ", file, ":", line, ": ", message,
                                        " (code ", status, ")"));
}

}  // namespace coat::dist::detail
