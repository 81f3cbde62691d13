#pragma once
/// Levelled logging to stderr. Results go to stdout or files, never through the log.
#include <sstream>
#include <string>

namespace afloc::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kQuiet = 4 };

/// Sets the minimum level printed (default kInfo; AFLOC_LOG_LEVEL=debug|info|warn|error|quiet).
void set_level(Level level);
Level level();
/// Parses "debug", "info", "warn", "error", "quiet"; Error on anything else.
Level parse_level(const std::string& name);
/// Prints "[afloc LEVEL] message" to stderr when level >= the current level.
void write(Level level, const std::string& message);

inline void debug(const std::string& m) { write(Level::kDebug, m); }
inline void info(const std::string& m) { write(Level::kInfo, m); }
inline void warn(const std::string& m) { write(Level::kWarn, m); }
inline void error(const std::string& m) { write(Level::kError, m); }

}  // namespace afloc::log
