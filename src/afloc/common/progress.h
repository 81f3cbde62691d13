#pragma once
/// A one-line progress bar on stderr with rate and ETA (redrawn in place on a terminal, printed every
/// few seconds as plain lines otherwise, so CI logs stay readable).
#include <chrono>
#include <cstdint>
#include <string>

namespace afloc {

/// A rate as the bar shows it: 2 decimals below 10 per second, 1 below 100, none above
/// ("2.05", "63.3", "26090").
std::string format_rate(double per_second);

class ProgressBar {
 public:
  /// total: number of units of work (0 = unknown); unit: "img", "step", ...
  /// enabled = false draws nothing (the log level below info also disables it).
  ProgressBar(std::string label, int64_t total, std::string unit = "it", bool enabled = true);
  ~ProgressBar();
  /// Advances by n units; extra is shown after the rate (for example "loss 2.31").
  void update(int64_t n = 1, const std::string& extra = "");
  /// Prints the final line (idempotent).
  void finish();

 private:
  void draw(bool final_line);
  std::string label_, unit_, extra_;
  int64_t total_ = 0, done_ = 0;
  bool tty_ = false, finished_ = false, enabled_ = true;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace afloc
