#include "afloc/io/tensor_file.h"

#include <sstream>

#include "afloc/common/error.h"

namespace afloc::io {
namespace {

void flatten(const c10::IValue& v, const std::string& prefix, TensorMap& out, const std::string& path) {
  if (v.isTensor()) {
    out[prefix] = v.toTensor();
    return;
  }
  if (v.isGenericDict()) {
    for (const auto& kv : v.toGenericDict()) {
      if (!kv.key().isString()) {
        throw Error(path + ": dict key under '" + prefix + "' is not a string");
      }
      const std::string k = kv.key().toStringRef();
      flatten(kv.value(), prefix.empty() ? k : prefix + "." + k, out, path);
    }
    return;
  }
  if (v.isNone()) return;
  throw Error(path + ": entry '" + prefix + "' is a " + v.tagKind() + ", expected a tensor or dict");
}

std::string shape_str(c10::IntArrayRef s) {
  std::ostringstream o;
  o << s;
  return o.str();
}

}  // namespace

TensorMap load_tensor_file(const std::string& path) {
  const std::string bytes = read_file(path);
  if (bytes.size() < 4 || bytes.compare(0, 2, "PK") != 0) {
    throw Error(path + ": not a torch.save zip archive (legacy or foreign format)");
  }
  c10::IValue v;
  try {
    v = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const std::exception& e) {
    std::string msg = e.what();
    msg = msg.substr(0, msg.find('\n'));
    throw Error(path + ": cannot unpickle (" + msg +
                "); save a plain dict of tensors, e.g. torch.save(dict(state_dict), path)");
  }
  if (!v.isGenericDict()) throw Error(path + ": top-level object is a " + v.tagKind() + ", expected a dict");
  TensorMap out;
  flatten(v, "", out, path);
  return out;
}

void save_tensor_file(const std::string& path, const TensorMap& tensors) {
  c10::Dict<std::string, torch::Tensor> dict;
  for (const auto& [k, t] : tensors) dict.insert(k, t.detach().to(torch::kCPU).contiguous());
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

TensorMap select_prefix(const TensorMap& map, const std::string& prefix) {
  TensorMap out;
  for (auto it = map.lower_bound(prefix); it != map.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    out.emplace(it->first.substr(prefix.size()), it->second);
  }
  return out;
}

const torch::Tensor& require(const TensorMap& map, const std::string& key, const std::string& origin) {
  auto it = map.find(key);
  if (it == map.end()) throw Error(origin + ": missing tensor '" + key + "'");
  return it->second;
}

void check_shape(const torch::Tensor& t, c10::IntArrayRef expected, const std::string& origin,
                 const std::string& key) {
  if (t.sizes() != expected) {
    throw Error(origin + ": " + key + ": expected shape " + shape_str(expected) + ", got " +
                shape_str(t.sizes()));
  }
}

}  // namespace afloc::io
