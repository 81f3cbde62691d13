#pragma once
/// Process-wide settings of the C library's allocator for tensor workloads.

namespace afloc {

/// The mmap and trim thresholds keep_freed_memory sets (bytes); also what a child process (e.g. a
/// Python reference in a benchmark) gets as MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_.
constexpr int kKeptBlockBytes = 1 << 30;

/// Makes glibc's malloc keep freed blocks of up to 1 GiB for reuse instead of handing each one back
/// to the kernel (mmap threshold and trim threshold both 1 GiB). Does nothing when the user has
/// tuned malloc already (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES set) or
/// on a C library other than glibc. Returns true when it applied the settings.
bool keep_freed_memory();

}  // namespace afloc
