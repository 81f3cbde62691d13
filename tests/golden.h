#pragma once
// Where golden cases live and how to find every case file of a kind.
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace afloc::test {

/// AFLOC_GOLDEN_DIR, else <source>/../shared/golden.
std::string golden_dir();
/// True when AFLOC_REQUIRE_GOLDEN=1: a missing directory or kind then fails instead of skipping.
bool golden_required();
/// Files in golden_dir() whose name starts with prefix and ends with suffix, sorted.
std::vector<std::string> golden_files(const std::string& prefix, const std::string& suffix);
/// Directory of the reference files written by scripts/gen_reference.py (AFLOC_REFERENCE_DIR).
std::string reference_dir();
/// Source tree root.
std::string source_dir();

}  // namespace afloc::test

/// Skips (or, when golden cases are required, fails) a test when no case files were found.
#define AFLOC_REQUIRE_CASES(files, what)                                                       \
  do {                                                                                       \
    if ((files).empty()) {                                                                   \
      if (::afloc::test::golden_required()) {                                                \
        FAIL() << "no " << (what) << " cases in " << ::afloc::test::golden_dir()             \
               << " (AFLOC_REQUIRE_GOLDEN=1)";                                                \
      } else {                                                                               \
        GTEST_SKIP() << "no " << (what) << " cases in " << ::afloc::test::golden_dir()       \
                     << "; set AFLOC_GOLDEN_DIR (AFLOC_REQUIRE_GOLDEN=1 makes this a failure)"; \
      }                                                                                      \
    }                                                                                        \
  } while (0)
