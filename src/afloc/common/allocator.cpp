#include "afloc/common/allocator.h"

#include <cstdlib>
#include <initializer_list>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace afloc {

bool keep_freed_memory() {
#if defined(__GLIBC__)
  for (const char* var : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"}) {
    if (std::getenv(var) != nullptr) return false;
  }
  // glibc serves blocks above its mmap threshold (128 KiB, raised only after such a block is freed,
  // and to 32 MiB at most) with fresh mmaps and unmaps them on free, and trims the heap's free top.
  // A training or inference step allocates and frees the same activations every step, so the kernel
  // zeroes their pages anew each time: on the 2-core CPU, page faults took ~10% of a `tiny` training
  // step's samples (perf) and training ran ~1.4x slower (42-52 against 61-74 pairs/s). Setting either
  // option alone also switches the dynamic threshold off, so both are set (the trim threshold alone
  // made training 4x slower).
  return mallopt(M_MMAP_THRESHOLD, kKeptBlockBytes) == 1 &&
         mallopt(M_TRIM_THRESHOLD, kKeptBlockBytes) == 1;
#else
  return false;
#endif
}

}  // namespace afloc
