#pragma once
/// A WordPiece vocabulary: one token per line of `vocab.txt`, line number (0-based) = id.
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace afloc::text {

class Vocab {
 public:
  Vocab() = default;
  /// Builds from tokens in id order. Error on duplicates or on a missing special token.
  explicit Vocab(std::vector<std::string> tokens, std::string origin = "<memory>");

  /// Loads `vocab.txt` (UTF-8, '\n' or "\r\n" line ends). Error naming the file and line for an
  /// empty file, invalid UTF-8, an empty or duplicate token, or missing [PAD]/[UNK]/[CLS]/[SEP].
  static Vocab load(const std::string& path);
  /// Writes one token per line.
  void save(const std::string& path) const;

  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  bool contains(const std::string& token) const { return ids_.count(token) != 0; }
  /// Id of token, or -1.
  int64_t find(const std::string& token) const;
  /// Id of token; Error when absent.
  int64_t id(const std::string& token) const;
  const std::string& token(int64_t id) const;
  const std::vector<std::string>& tokens() const { return tokens_; }
  const std::string& origin() const { return origin_; }

  int64_t pad_id() const { return pad_; }
  int64_t unk_id() const { return unk_; }
  int64_t cls_id() const { return cls_; }
  int64_t sep_id() const { return sep_; }

 private:
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int64_t> ids_;
  std::string origin_;
  int64_t pad_ = -1, unk_ = -1, cls_ = -1, sep_ = -1;
};

}  // namespace afloc::text
