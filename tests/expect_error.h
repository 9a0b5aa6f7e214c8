// Test helper: runs fn and expects an exception of type E (a coat::Error by default) whose message contains
// `needle`.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "coat/core/error.h"

namespace coat::test {

template <typename E = Error, typename Fn>
void expect_error_containing(Fn&& fn, const std::string& needle) {
  try {
    fn();
    FAIL() << "no exception; expected one containing: " << needle;
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace coat::test
