#pragma once
/// The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON header
/// {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the raw little-endian
/// tensor bytes. Hand-written: Debian packages no C/C++ safetensors library, and the format is a
/// JSON header plus bytes (read with every bound checked).
#include <torch/torch.h>

#include <map>
#include <string>

#include "afloc/io/tensor_file.h"

namespace afloc::io {

struct SafetensorsFile {
  TensorMap tensors;
  std::map<std::string, std::string> metadata;
};

/// Loads a .safetensors file (CPU tensors). Error naming the file for a short file, a header that
/// is not JSON or exceeds 100 MB, unknown dtypes, or offsets outside the data or overlapping.
SafetensorsFile load_safetensors(const std::string& path);
/// Writes tensors (moved to CPU, made contiguous) in name order, with optional string metadata;
/// atomically (temp file + rename).
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace afloc::io
