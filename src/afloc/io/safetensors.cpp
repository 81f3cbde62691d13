#include "afloc/io/safetensors.h"

#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "afloc/common/error.h"

namespace afloc::io {
namespace {

const std::vector<std::pair<std::string, torch::ScalarType>>& dtypes() {
  static const std::vector<std::pair<std::string, torch::ScalarType>> k = {
      {"F32", torch::kFloat}, {"F64", torch::kDouble}, {"F16", torch::kHalf},  {"BF16", torch::kBFloat16},
      {"I64", torch::kLong},  {"I32", torch::kInt},    {"I16", torch::kShort}, {"I8", torch::kChar},
      {"U8", torch::kByte},   {"BOOL", torch::kBool}};
  return k;
}

torch::ScalarType parse_dtype(const std::string& s, const std::string& origin) {
  for (const auto& [n, t] : dtypes())
    if (n == s) return t;
  throw Error(origin + ": unsupported safetensors dtype " + s);
}

std::string dtype_name(torch::ScalarType t) {
  for (const auto& [n, d] : dtypes())
    if (d == t) return n;
  throw Error(std::string("safetensors: cannot store dtype ") + c10::toString(t));
}

}  // namespace

SafetensorsFile load_safetensors(const std::string& path) {
  const std::string bytes = read_file(path);
  if (bytes.size() < 8) throw Error(path + ": too short for a safetensors file");
  uint64_t n = 0;
  for (int k = 0; k < 8; ++k) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[static_cast<size_t>(k)])) << (8 * k);
  if (n > (uint64_t{100} << 20) || 8 + n > bytes.size()) {
    throw Error(path + ": safetensors header length " + std::to_string(n) + " is not plausible for a " +
                std::to_string(bytes.size()) + "-byte file");
  }
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(bytes.substr(8, n));
  } catch (const std::exception& e) {
    throw Error(path + ": safetensors header is not JSON (" + e.what() + ")");
  }
  const size_t base = 8 + n, data = bytes.size() - base;
  SafetensorsFile f;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") {
      for (auto m = it.value().begin(); m != it.value().end(); ++m)
        if (m.value().is_string()) f.metadata[m.key()] = m.value().get<std::string>();
      continue;
    }
    with_context(path + ": tensor " + it.key(), [&] {
      const auto& e = it.value();
      const torch::ScalarType t = parse_dtype(e.at("dtype").get<std::string>(), path);
      const auto shape = e.at("shape").get<std::vector<int64_t>>();
      const auto off = e.at("data_offsets").get<std::vector<uint64_t>>();
      if (off.size() != 2 || off[0] > off[1] || off[1] > data) throw Error("data_offsets outside the data");
      int64_t numel = 1;
      for (int64_t d : shape) {
        if (d < 0) throw Error("negative dimension");
        numel *= d;
      }
      if (static_cast<uint64_t>(numel) * c10::elementSize(t) != off[1] - off[0]) {
        throw Error("shape and dtype need " + std::to_string(numel * static_cast<int64_t>(c10::elementSize(t))) +
                    " bytes, the offsets give " + std::to_string(off[1] - off[0]));
      }
      torch::Tensor x = torch::empty(shape, torch::TensorOptions().dtype(t));
      if (numel > 0) std::memcpy(x.data_ptr(), bytes.data() + base + off[0], off[1] - off[0]);
      f.tensors[it.key()] = x;
      spans.emplace_back(off[0], off[1]);
      return 0;
    });
  }
  std::sort(spans.begin(), spans.end());
  for (size_t k = 1; k < spans.size(); ++k) {
    if (spans[k].first < spans[k - 1].second) throw Error(path + ": overlapping tensor data in safetensors file");
  }
  return f;
}

void save_safetensors(const std::string& path, const TensorMap& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::vector<torch::Tensor> parts;
  uint64_t off = 0;
  for (const auto& [name, t] : tensors) {
    const torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(c.numel()) * c10::elementSize(c.scalar_type());
    h[name] = {{"dtype", dtype_name(c.scalar_type())}, {"shape", c.sizes().vec()}, {"data_offsets", {off, off + nbytes}}};
    off += nbytes;
    parts.push_back(c);
  }
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // align the data to 8 bytes, as the reference writer does
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int k = 0; k < 8; ++k) out[static_cast<size_t>(k)] = static_cast<char>((n >> (8 * k)) & 0xff);
  out += header;
  out.reserve(out.size() + off);
  for (const auto& c : parts) {
    out.append(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * c10::elementSize(c.scalar_type()));
  }
  write_file_atomic(path, out);
}

}  // namespace afloc::io
