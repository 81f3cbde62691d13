#pragma once
/// JSON output of a measured number that may be undefined.
#include <cmath>

#include <nlohmann/json.hpp>

namespace afloc {

/// The value, or null for NaN (JSON has no NaN; undefined metrics and losses are written as null).
inline nlohmann::ordered_json number_or_null(double v) {
  return std::isnan(v) ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(v);
}

}  // namespace afloc
