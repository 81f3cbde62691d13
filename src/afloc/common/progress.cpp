#include "afloc/common/progress.h"

#include <unistd.h>

#include <cstdio>

#include "afloc/common/log.h"

namespace afloc {
namespace {

std::string format_duration(double seconds) {
  if (seconds < 0 || seconds > 1e7) return "--:--";
  const auto s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
  }
  return buf;
}

}  // namespace

std::string format_rate(double per_second) {
  char buf[32];
  const int decimals = per_second < 10 ? 2 : per_second < 100 ? 1 : 0;
  std::snprintf(buf, sizeof buf, "%.*f", decimals, per_second);
  return buf;
}

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit, bool enabled)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total) {
  tty_ = ::isatty(STDERR_FILENO) != 0;
  enabled_ = enabled && log::level() <= log::Level::kInfo;
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(int64_t n, const std::string& extra) {
  done_ += n;
  extra_ = extra;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  // Terminals redraw ~10 times a second; logs get a line every 5 s.
  if (since >= (tty_ ? 0.1 : 5.0)) {
    last_draw_ = now;
    draw(false);
  }
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  draw(true);
}

void ProgressBar::draw(bool final_line) {
  if (!enabled_) return;
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  std::string bar;
  if (total_ > 0) {
    const int width = 24;
    const double frac = std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_));
    const int filled = static_cast<int>(frac * width);
    bar = "[" + std::string(filled, '#') + std::string(width - filled, '.') + "] ";
    char pct[16];
    std::snprintf(pct, sizeof pct, "%3.0f%% ", frac * 100.0);
    bar += pct;
  }
  char line[512];
  const double eta = (total_ > 0 && rate > 0) ? static_cast<double>(total_ - done_) / rate : -1;
  // "done/total", or the count alone when the total is not known.
  const std::string count = std::to_string(done_) + (total_ > 0 ? "/" + std::to_string(total_) : "");
  std::snprintf(line, sizeof line, "%s %s%s %s | %s %s/s | %s<%s%s%s", label_.c_str(),
                bar.c_str(), count.c_str(), unit_.c_str(), format_rate(rate).c_str(),
                unit_.c_str(), format_duration(elapsed).c_str(),
                total_ > 0 ? format_duration(eta).c_str() : "?", extra_.empty() ? "" : " | ",
                extra_.c_str());
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s%s", line, final_line ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s\n", line);
  }
  std::fflush(stderr);
}

}  // namespace afloc
