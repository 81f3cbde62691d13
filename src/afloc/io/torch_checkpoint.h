#pragma once
/// Reading tensors out of any `torch.save` zip file, including PyTorch Lightning checkpoints that
/// hold objects of classes we do not have (callbacks, OmegaConf hyper-parameters): a restricted
/// unpickler that builds tensors for torch's own rebuild functions and keeps every other global as an
/// inert placeholder. Nothing from the file is executed or imported.
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "afloc/io/tensor_file.h"

namespace afloc::io {

/// What a checkpoint holds, for reports.
struct CheckpointContents {
  TensorMap tensors;                   ///< every tensor reachable through dicts/lists, by dotted path
  std::vector<std::string> top_level;  ///< keys of the top-level dict, in file order
  std::vector<std::string> foreign;    ///< globals that were not resolved (module.name), sorted, unique
};

/// Reads a torch.save zip archive (data.pkl + data/<key> storages). Tensors under dicts are named by
/// their path ("state_dict.afloc.img_encoder.model.conv1.weight"). Error naming the file for a file
/// that is not a torch zip, a malformed pickle, or a storage record that is missing or too short.
CheckpointContents read_torch_checkpoint(const std::string& path);

}  // namespace afloc::io
