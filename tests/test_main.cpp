// GoogleTest main for afloc's test programs: LibTorch starts with one intra-op thread here, so set
// all cores explicitly (AFLOC_TEST_THREADS overrides).
#include <gtest/gtest.h>

#include <cstdlib>

#ifdef AFLOC_TEST_TORCH
#include "afloc/common/threads.h"
#endif

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
#ifdef AFLOC_TEST_TORCH
  const char* env = std::getenv("AFLOC_TEST_THREADS");
  afloc::set_threads(env ? std::atoi(env) : 0);
#endif
  return RUN_ALL_TESTS();
}
