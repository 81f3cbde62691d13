#include "afloc/io/state_dict.h"

#include <set>
#include <sstream>

#include "afloc/common/error.h"

namespace afloc::io {

std::string LoadReport::summary(size_t limit) const {
  if (complete()) return "all " + std::to_string(loaded.size()) + " tensors loaded";
  std::ostringstream o;
  auto list = [&](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    o << v.size() << " " << what << ":";
    for (size_t i = 0; i < v.size() && i < limit; ++i) o << "\n  " << v[i];
    if (v.size() > limit) o << "\n  ... (" << v.size() - limit << " more)";
    o << "\n";
  };
  o << loaded.size() << " tensors loaded\n";
  list("missing (in the model, not in the file)", missing);
  list("unexpected (in the file, not in the model)", unexpected);
  list("shape mismatches", mismatched);
  std::string s = o.str();
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

TensorMap state_dict(const torch::nn::Module& module) {
  TensorMap out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out[p.key()] = p.value();
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out[b.key()] = b.value();
  return out;
}

LoadReport load_state_dict(torch::nn::Module& module, const TensorMap& tensors,
                           const std::string& origin, const std::string& strip_prefix, bool strict) {
  TensorMap target = state_dict(module);
  LoadReport rep;
  std::set<std::string> seen;
  torch::NoGradGuard no_grad;
  for (const auto& [raw_name, src] : tensors) {
    std::string name = raw_name;
    if (!strip_prefix.empty() && name.rfind(strip_prefix, 0) == 0) name = name.substr(strip_prefix.size());
    auto it = target.find(name);
    if (it == target.end()) {
      rep.unexpected.push_back(raw_name);
      continue;
    }
    torch::Tensor dst = it->second;
    if (dst.sizes() != src.sizes()) {
      std::ostringstream o;
      o << name << ": file " << src.sizes() << " vs model " << dst.sizes();
      rep.mismatched.push_back(o.str());
      seen.insert(name);
      continue;
    }
    dst.copy_(src.to(dst.device(), dst.scalar_type()));
    rep.loaded.push_back(name);
    seen.insert(name);
  }
  for (const auto& [name, t] : target) {
    if (!seen.count(name)) rep.missing.push_back(name);
  }
  if (strict && !rep.complete()) throw Error(origin + ": state dict does not match the model: " + rep.summary());
  return rep;
}

}  // namespace afloc::io
