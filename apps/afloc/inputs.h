#pragma once
/// Helpers the inference commands share: expanding image arguments into files, and the prompt
/// embedding cache flags.
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace afloc::cli {

/// True for .png, .jpg, .jpeg, .dcm, .dicom (any case).
bool is_image_file(const std::string& path);

/// Files as given, folders (recursive, sorted; PNG/JPEG/DICOM), .csv lists (an `image` or `path`
/// column) and .txt lists (one path per line); relative paths in lists are relative to the list's
/// folder. Error naming a CSV without
/// such a column.
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs);

/// --prompt-cache DIR / --no-prompt-cache.
struct PromptCacheFlags {
  std::string dir;  ///< "" = the default folder (see infer::default_prompt_cache_dir)
  bool off = false;
  void add_to(CLI::App* c);
  /// The folder to use ("" = memory only).
  std::string resolved() const;
};

}  // namespace afloc::cli
