#pragma once
/// Errors for bad files, configs and inputs. Thrown inside the library, caught once at the program
/// boundary (CLI: exit code 1). Messages name the file, field and value.
#include <stdexcept>
#include <string>

namespace afloc {

/// The single error type for user-facing failures (bad file, bad config, bad input).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// Throws Error(context + ": " + e.what()) for any std::exception thrown by fn, adding context the
/// way a call stack would ("loading checkpoint X: reading tensor Y: ...").
template <typename Fn>
auto with_context(const std::string& context, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::exception& e) {
    throw Error(context + ": " + e.what());
  }
}

/// Reads a whole file into a string; Error naming the path when it cannot be opened or read.
std::string read_file(const std::string& path);

/// True when path exists (any kind) / is a regular file; never throws.
bool path_exists(const std::string& path);
bool is_regular_file(const std::string& path);

/// Creates the folder a file is to be written in, and its parents (nothing for a bare file name,
/// which goes in the working directory). Error naming the file when it cannot.
void create_parent_dirs(const std::string& path);

/// Writes a whole file atomically (temp file + rename), creating no directories.
void write_file_atomic(const std::string& path, const std::string& data);

}  // namespace afloc
