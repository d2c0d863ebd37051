// Error-path assertions shared by the test suites.
#pragma once
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "core/error.h"

namespace tdrop::testing {

// The message of the tdrop::Error that f throws; a test failure (and "") when it throws none.
template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected tdrop::Error, nothing was thrown";
  return "";
}

// f must throw a tdrop::Error whose message holds every needle.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> needles) {
  const std::string msg = error_message(f);
  for (const std::string& n : needles)
    EXPECT_NE(msg.find(n), std::string::npos) << "message \"" << msg << "\" lacks \"" << n << "\"";
}

}  // namespace tdrop::testing
