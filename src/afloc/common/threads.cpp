#include "afloc/common/threads.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <thread>

#include "afloc/common/allocator.h"

namespace afloc {

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int set_threads(int n) {
  const int count = n > 0 ? n : hardware_threads();
  at::set_num_threads(count);
  // Flush denormals to zero (FTZ/DAZ). The attention softmaxes' gradients are full of denormal
  // floats, which x86 handles ~100x slower: without this a tiny-config training step is 1.5x slower
  // (bench_train). Threads created afterwards inherit the setting; values below 1e-38 become 0.
  at::globalContext().setFlushDenormal(true);
  keep_freed_memory();
  return count;
}

}  // namespace afloc
