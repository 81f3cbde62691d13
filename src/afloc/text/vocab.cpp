#include "afloc/text/vocab.h"

#include "afloc/common/error.h"
#include "afloc/text/unicode.h"

namespace afloc::text {

Vocab::Vocab(std::vector<std::string> tokens, std::string origin)
    : tokens_(std::move(tokens)), origin_(std::move(origin)) {
  if (tokens_.empty()) throw Error(origin_ + ": vocabulary is empty");
  ids_.reserve(tokens_.size());
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const auto& t = tokens_[i];
    if (t.empty()) throw Error(origin_ + ": line " + std::to_string(i + 1) + ": empty token");
    auto [it, inserted] = ids_.emplace(t, static_cast<int64_t>(i));
    if (!inserted) {
      throw Error(origin_ + ": line " + std::to_string(i + 1) + ": duplicate token '" + t +
                  "' (first on line " + std::to_string(it->second + 1) + ")");
    }
  }
  auto special = [&](const char* name) {
    const int64_t id = find(name);
    if (id < 0) throw Error(origin_ + ": missing special token " + name);
    return id;
  };
  pad_ = special("[PAD]");
  unk_ = special("[UNK]");
  cls_ = special("[CLS]");
  sep_ = special("[SEP]");
}

Vocab Vocab::load(const std::string& path) {
  const std::string data = read_file(path);
  if (data.empty()) throw Error(path + ": vocabulary file is empty");
  std::vector<std::string> tokens;
  size_t start = 0;
  while (start < data.size()) {
    size_t end = data.find('\n', start);
    if (end == std::string::npos) end = data.size();
    std::string line = data.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!unicode::is_valid_utf8(line)) {
      throw Error(path + ": line " + std::to_string(tokens.size() + 1) + ": not valid UTF-8");
    }
    tokens.push_back(std::move(line));
    start = end + 1;
  }
  return Vocab(std::move(tokens), path);
}

void Vocab::save(const std::string& path) const {
  std::string out;
  for (const auto& t : tokens_) {
    out += t;
    out += '\n';
  }
  write_file_atomic(path, out);
}

int64_t Vocab::find(const std::string& token) const {
  auto it = ids_.find(token);
  return it == ids_.end() ? -1 : it->second;
}

int64_t Vocab::id(const std::string& token) const {
  const int64_t i = find(token);
  if (i < 0) throw Error(origin_ + ": token '" + token + "' not in vocabulary");
  return i;
}

const std::string& Vocab::token(int64_t id) const {
  if (id < 0 || id >= size()) {
    throw Error(origin_ + ": token id " + std::to_string(id) + " out of range [0, " +
                std::to_string(size()) + ")");
  }
  return tokens_[static_cast<size_t>(id)];
}

}  // namespace afloc::text
