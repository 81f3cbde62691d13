#pragma once
/// NumPy .npy files (format 1.0, little-endian float32, C order): what users load with np.load.
/// Hand-written: the format is a short text header; no Debian C++ library writes it.
#include <cstdint>
#include <string>
#include <vector>

namespace afloc::io {

/// Writes a float32 array of the given shape (atomically). Error naming the file.
void save_npy(const std::string& path, const std::vector<float>& data, const std::vector<int64_t>& shape);
/// Reads a little-endian float32 C-order .npy; Error naming the file for anything else.
std::vector<float> load_npy(const std::string& path, std::vector<int64_t>* shape = nullptr);

}  // namespace afloc::io
