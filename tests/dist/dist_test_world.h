// The dist tests' world: the ProcessGroup that tests/dist/main.cpp owns for the whole run (it must outlive
// every test, and MPI can be initialised once per process).
#pragma once

#include "coat/dist/process_group.h"

namespace coat::test {

dist::ProcessGroup& world();

}  // namespace coat::test
