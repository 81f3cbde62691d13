#pragma once
/// A small thread pool for independent units of work with a progress bar.
#include <cstddef>
#include <functional>
#include <string>

namespace afloc {

/// Runs work(i) for every i in [0, n) on up to `threads` threads (this one included; <= 1: here
/// alone), with a progress bar of `label` counting `unit`s (drawn by this thread; progress = false
/// draws nothing). After the first exception no new unit starts; it is rethrown once all threads
/// stop. The units must not depend on each other or on the order they run in.
void parallel_for(size_t n, int threads, const std::string& label, const std::string& unit, bool progress,
                  const std::function<void(size_t)>& work);

}  // namespace afloc
