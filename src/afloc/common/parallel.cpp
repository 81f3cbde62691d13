#include "afloc/common/parallel.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "afloc/common/progress.h"

namespace afloc {

void parallel_for(size_t n, int threads, const std::string& label, const std::string& unit, bool progress,
                  const std::function<void(size_t)>& work) {
  ProgressBar bar(label, static_cast<int64_t>(n), unit, progress);
  std::atomic<size_t> next{0}, done{0};
  std::exception_ptr error;
  std::mutex mu;
  // Takes the next unit; false when none is left (or after an error).
  auto step = [&] {
    const size_t i = next++;
    if (i >= n) return false;
    try {
      work(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!error) error = std::current_exception();
      next = n;
    }
    ++done;
    return true;
  };
  const size_t n_threads = std::min<size_t>(n, static_cast<size_t>(std::max(1, threads)));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < n_threads; ++t) pool.emplace_back([&] { while (step()) {} });
  // This thread works too, and draws the bar between its units.
  size_t shown = 0;
  while (step()) {
    const size_t d = done;
    bar.update(static_cast<int64_t>(d - shown));
    shown = d;
  }
  for (auto& t : pool) t.join();
  bar.update(static_cast<int64_t>(done - shown));
  bar.finish();
  if (error) std::rethrow_exception(error);
}

}  // namespace afloc
