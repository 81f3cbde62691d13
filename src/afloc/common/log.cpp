#include "afloc/common/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "afloc/common/error.h"

namespace afloc::log {
namespace {

Level initial_level() {
  const char* env = std::getenv("AFLOC_LOG_LEVEL");
  if (env == nullptr) return Level::kInfo;
  try {
    return parse_level(env);
  } catch (const Error&) {
    return Level::kInfo;
  }
}

std::atomic<int>& current() {
  static std::atomic<int> lvl{static_cast<int>(initial_level())};
  return lvl;
}

std::mutex& out_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

void set_level(Level l) { current().store(static_cast<int>(l)); }
Level level() { return static_cast<Level>(current().load()); }

Level parse_level(const std::string& name) {
  if (name == "debug") return Level::kDebug;
  if (name == "info") return Level::kInfo;
  if (name == "warn") return Level::kWarn;
  if (name == "error") return Level::kError;
  if (name == "quiet") return Level::kQuiet;
  throw Error("log level: unknown value '" + name + "' (expected debug|info|warn|error|quiet)");
}

void write(Level l, const std::string& message) {
  if (static_cast<int>(l) < current().load()) return;
  static const char* names[] = {"debug", "info", "warn", "error", "quiet"};
  std::lock_guard<std::mutex> lock(out_mutex());
  std::fprintf(stderr, "[afloc %s] %s\n", names[static_cast<int>(l)], message.c_str());
  std::fflush(stderr);
}

}  // namespace afloc::log
