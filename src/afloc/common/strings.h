#pragma once
/// Small string helpers shared across the library.
#include <cctype>
#include <string>
#include <vector>

namespace afloc {

/// ASCII lower-case (bytes outside A-Z unchanged): category names, file extensions, option values.
/// Text for the model goes through text::clean_prompt (Unicode-aware) instead.
inline std::string ascii_lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

/// The parts joined by `sep` ("PA,AP").
inline std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string s;
  for (size_t i = 0; i < parts.size(); ++i) s += (i ? sep : "") + parts[i];
  return s;
}

}  // namespace afloc
