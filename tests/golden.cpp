#include "golden.h"

#include <dirent.h>

#include <algorithm>
#include <cstdlib>

namespace afloc::test {

std::string source_dir() { return AFLOC_SOURCE_DIR; }

std::string golden_dir() {
  const char* env = std::getenv("AFLOC_GOLDEN_DIR");
  if (env != nullptr && *env != '\0') return env;
  return source_dir() + "/../shared/golden";
}

bool golden_required() {
  const char* env = std::getenv("AFLOC_REQUIRE_GOLDEN");
  return env != nullptr && std::string(env) == "1";
}

std::string reference_dir() {
  const char* env = std::getenv("AFLOC_REFERENCE_DIR");
  if (env != nullptr && *env != '\0') return env;
  return AFLOC_BINARY_DIR "/reference";
}

std::vector<std::string> golden_files(const std::string& prefix, const std::string& suffix) {
  std::vector<std::string> out;
  const std::string dir = golden_dir();
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n.size() >= prefix.size() + suffix.size() && n.compare(0, prefix.size(), prefix) == 0 &&
        n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0) {
      out.push_back(dir + "/" + n);
    }
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace afloc::test
