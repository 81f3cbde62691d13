#pragma once
/// Loading named tensors into a module's parameters and buffers, with a report of missing,
/// unexpected and mis-shaped entries by name and shape.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "afloc/io/tensor_file.h"

namespace afloc::io {

struct LoadReport {
  std::vector<std::string> loaded;
  std::vector<std::string> missing;     ///< in the module, not in the file
  std::vector<std::string> unexpected;  ///< in the file, not in the module
  std::vector<std::string> mismatched;  ///< "name: file [..] vs module [..]"
  bool complete() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  /// One line per problem (at most `limit` per kind), or "all N tensors loaded".
  std::string summary(size_t limit = 10) const;
};

/// The module's parameters and buffers by their state-dict name.
TensorMap state_dict(const torch::nn::Module& module);

/// Copies tensors whose name (after removing strip_prefix, when it starts the name) matches a
/// parameter or buffer, converting dtype. With strict, any problem throws Error(origin + report).
LoadReport load_state_dict(torch::nn::Module& module, const TensorMap& tensors,
                           const std::string& origin, const std::string& strip_prefix = "",
                           bool strict = true);

}  // namespace afloc::io
