// GoogleTest main for afloc's test programs.
// - LibTorch starts with one intra-op thread here, so set all cores explicitly (AFLOC_TEST_THREADS
//   overrides).
// - Every test program writes its files (phantom worlds, runs, checkpoints: up to a few hundred MB
//   per program) under its own scratch directory, $TEST_TMPDIR (else $TMPDIR, else /tmp) /
//   afloc_test_<pid>, which ::testing::TempDir() then returns. It is removed when every test of the
//   program passed and kept, with its path printed, when one failed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#ifdef AFLOC_TEST_TORCH
#include "afloc/common/threads.h"
#endif

namespace {

std::filesystem::path make_scratch_dir() {
  const std::string base = ::testing::TempDir();  // reads TEST_TMPDIR / TMPDIR, ends with '/'
  const std::filesystem::path dir = base + "afloc_test_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  ::setenv("TEST_TMPDIR", dir.c_str(), 1);  // for ::testing::TempDir() and the programs tests start
  return dir;
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
#ifdef AFLOC_TEST_TORCH
  const char* env = std::getenv("AFLOC_TEST_THREADS");
  afloc::set_threads(env ? std::atoi(env) : 0);
#endif
  const std::filesystem::path scratch = make_scratch_dir();
  const int rc = RUN_ALL_TESTS();
  if (rc == 0) {
    std::error_code ec;
    std::filesystem::remove_all(scratch, ec);
    if (ec) std::fprintf(stderr, "warning: could not remove %s: %s\n", scratch.c_str(), ec.message().c_str());
  } else {
    std::fprintf(stderr, "test files kept for inspection in %s\n", scratch.c_str());
  }
  return rc;
}
