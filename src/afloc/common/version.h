#pragma once
/// afloc's version: "0.1.0" and the git revision it was configured from.

namespace afloc {

/// Semantic version, e.g. "0.1.0".
const char* version();
/// Short git revision at configure time, or "unknown".
const char* git_revision();

}  // namespace afloc
