#pragma once
/// Thread-count control for LibTorch's intra-op pool (which starts at 1 thread in this build).

namespace afloc {

/// Number of online cores (>= 1).
int hardware_threads();
/// Sets LibTorch's intra-op threads: n > 0 as given, n <= 0 = all cores, flushes denormal floats to
/// zero on this thread and the threads it creates later, and keeps freed memory in the allocator
/// (keep_freed_memory). Returns the thread count set.
int set_threads(int n);

}  // namespace afloc
