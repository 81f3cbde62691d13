#include "afloc/io/npy.h"

#include <cstring>

#include "afloc/common/error.h"

namespace afloc::io {

void save_npy(const std::string& path, const std::vector<float>& data, const std::vector<int64_t>& shape) {
  int64_t n = 1;
  std::string dims;
  for (int64_t d : shape) {
    n *= d;
    dims += std::to_string(d) + ", ";
  }
  if (shape.size() > 1) dims.erase(dims.size() - 2);  // "(224, 224)"; a 1-d shape keeps "(5, )"
  if (n != static_cast<int64_t>(data.size())) throw Error(path + ": npy shape does not match the data");
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // magic (6) + version (2) + length (2) + header + '\n', padded to a multiple of 64.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = std::string("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out.append(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
  write_file_atomic(path, out);
}

std::vector<float> load_npy(const std::string& path, std::vector<int64_t>* shape) {
  const std::string b = read_file(path);
  if (b.size() < 10 || b.compare(0, 6, "\x93NUMPY") != 0) throw Error(path + ": not a .npy file");
  const size_t hl = static_cast<unsigned char>(b[8]) | (static_cast<size_t>(static_cast<unsigned char>(b[9])) << 8);
  if (b[6] != 1 || 10 + hl > b.size()) throw Error(path + ": unsupported .npy version or truncated header");
  const std::string h = b.substr(10, hl);
  if (h.find("'<f4'") == std::string::npos || h.find("'fortran_order': False") == std::string::npos) {
    throw Error(path + ": only little-endian float32 C-order arrays are read");
  }
  std::vector<int64_t> dims;
  const size_t a = h.find('(', h.find("'shape'")), z = h.find(')', a);
  std::string s = h.substr(a + 1, z - a - 1);
  size_t p = 0;
  int64_t n = 1;
  while (p < s.size()) {
    const size_t c = s.find(',', p);
    const std::string tok = s.substr(p, c == std::string::npos ? std::string::npos : c - p);
    if (tok.find_first_not_of(' ') != std::string::npos) {
      dims.push_back(std::stoll(tok));
      n *= dims.back();
    }
    if (c == std::string::npos) break;
    p = c + 1;
  }
  if (10 + hl + static_cast<size_t>(n) * 4 > b.size()) throw Error(path + ": .npy data shorter than its shape");
  std::vector<float> out(static_cast<size_t>(n));
  std::memcpy(out.data(), b.data() + 10 + hl, out.size() * 4);
  if (shape) *shape = dims;
  return out;
}

}  // namespace afloc::io
