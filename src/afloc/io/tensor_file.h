#pragma once
/// Reading and writing `torch.save`-style files whose pickle is a plain dict of tensors (nested
/// dicts allowed), the format of shared/golden and of afloc's own tensor outputs.
#include <torch/torch.h>

#include <map>
#include <string>

namespace afloc::io {

/// Flat name -> tensor map; nested dicts are flattened with '.' ("calc_loss.loss").
using TensorMap = std::map<std::string, torch::Tensor>;

/// Loads a torch.save zip file of a plain dict. Error naming the file when it is missing, not a
/// torch zip, or holds something other than str -> tensor/dict (an OrderedDict state dict needs
/// `torch.save(dict(sd))` on the Python side).
TensorMap load_tensor_file(const std::string& path);

/// Saves as a plain dict readable by Python `torch.load` (values moved to CPU).
void save_tensor_file(const std::string& path, const TensorMap& tensors);

/// The entries whose name starts with prefix, with the prefix removed ("state_dict.conv1.weight"
/// -> "conv1.weight").
TensorMap select_prefix(const TensorMap& map, const std::string& prefix);

/// The tensor named key; Error naming file and key when absent.
const torch::Tensor& require(const TensorMap& map, const std::string& key, const std::string& origin);

/// Checks a tensor's shape; Error "origin: key: expected shape [..], got [..]".
void check_shape(const torch::Tensor& t, c10::IntArrayRef expected, const std::string& origin,
                 const std::string& key);

}  // namespace afloc::io
