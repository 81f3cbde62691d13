#include "afloc/text/vocab_builder.h"

#include <map>
#include <queue>
#include <set>
#include <unordered_map>

#include "afloc/common/error.h"
#include "afloc/text/unicode.h"

namespace afloc::text {
namespace {

using Pair = std::pair<int32_t, int32_t>;

struct PairHash {
  size_t operator()(const Pair& p) const {
    return std::hash<int64_t>()((static_cast<int64_t>(p.first) << 32) ^ static_cast<uint32_t>(p.second));
  }
};

struct Candidate {
  int64_t count;
  Pair pair;
  bool operator<(const Candidate& o) const {
    // priority_queue pops the largest: highest count first, then the smallest ids.
    if (count != o.count) return count < o.count;
    return pair > o.pair;
  }
};

}  // namespace

Vocab build_wordpiece_vocab(const std::vector<std::string>& texts, const VocabBuildOptions& opt) {
  if (opt.size <= static_cast<int64_t>(opt.special_tokens.size())) {
    throw Error("vocab build: size " + std::to_string(opt.size) +
                " must exceed the number of special tokens (" +
                std::to_string(opt.special_tokens.size()) + ")");
  }
  // The tokenizer's normalizer and pre-tokenizer define the words; no vocabulary is needed for
  // that step, so a placeholder one is used.
  TokenizerOptions topt;
  topt.lowercase = opt.lowercase;
  const Tokenizer splitter(Vocab({"[PAD]", "[UNK]", "[CLS]", "[SEP]"}), topt);

  std::map<std::string, int64_t> word_counts;  // ordered: deterministic ids
  for (const auto& t : texts) {
    for (auto& w : splitter.pre_tokenize(t)) ++word_counts[w];
  }
  if (word_counts.empty()) throw Error("vocab build: the corpus has no words");

  std::vector<std::string> pieces;  // id -> piece
  std::unordered_map<std::string, int32_t> piece_ids;
  auto intern = [&](const std::string& p) {
    auto it = piece_ids.find(p);
    if (it != piece_ids.end()) return it->second;
    const auto id = static_cast<int32_t>(pieces.size());
    pieces.push_back(p);
    piece_ids.emplace(p, id);
    return id;
  };

  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> freqs;
  std::set<std::string> alphabet;
  for (const auto& [w, n] : word_counts) {
    const std::u32string chars = unicode::decode_utf8(w);
    std::vector<int32_t> syms;
    for (size_t i = 0; i < chars.size(); ++i) {
      std::string c = unicode::encode_utf8(chars.substr(i, 1));
      if (i > 0) c = opt.continuing_prefix + c;
      alphabet.insert(c);
      syms.push_back(intern(c));
    }
    words.push_back(std::move(syms));
    freqs.push_back(n);
  }

  std::vector<std::string> vocab = opt.special_tokens;
  std::set<std::string> in_vocab(vocab.begin(), vocab.end());
  for (const auto& c : alphabet) {
    if (in_vocab.insert(c).second) vocab.push_back(c);
  }

  std::unordered_map<Pair, int64_t, PairHash> pair_counts;
  std::unordered_map<Pair, std::set<size_t>, PairHash> where;
  for (size_t w = 0; w < words.size(); ++w) {
    for (size_t i = 0; i + 1 < words[w].size(); ++i) {
      const Pair p{words[w][i], words[w][i + 1]};
      pair_counts[p] += freqs[w];
      where[p].insert(w);
    }
  }
  std::priority_queue<Candidate> queue;
  for (const auto& [p, n] : pair_counts) queue.push({n, p});

  auto strip_prefix = [&](const std::string& s) {
    return s.rfind(opt.continuing_prefix, 0) == 0 ? s.substr(opt.continuing_prefix.size()) : s;
  };

  while (static_cast<int64_t>(vocab.size()) < opt.size && !queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    auto it = pair_counts.find(top.pair);
    if (it == pair_counts.end() || it->second != top.count) continue;  // stale entry
    if (top.count < opt.min_frequency) break;
    const Pair p = top.pair;
    const std::string merged = pieces[static_cast<size_t>(p.first)] +
                               strip_prefix(pieces[static_cast<size_t>(p.second)]);
    const int32_t m = intern(merged);
    if (in_vocab.insert(merged).second) vocab.push_back(merged);

    std::set<Pair> touched;
    const std::set<size_t> affected = where[p];
    for (size_t w : affected) {
      auto& syms = words[w];
      // Remove this word's pairs, merge, add them back.
      for (size_t i = 0; i + 1 < syms.size(); ++i) {
        const Pair q{syms[i], syms[i + 1]};
        pair_counts[q] -= freqs[w];
        where[q].erase(w);
        touched.insert(q);
      }
      std::vector<int32_t> out;
      for (size_t i = 0; i < syms.size();) {
        if (i + 1 < syms.size() && syms[i] == p.first && syms[i + 1] == p.second) {
          out.push_back(m);
          i += 2;
        } else {
          out.push_back(syms[i]);
          ++i;
        }
      }
      syms.swap(out);
      for (size_t i = 0; i + 1 < syms.size(); ++i) {
        const Pair q{syms[i], syms[i + 1]};
        pair_counts[q] += freqs[w];
        where[q].insert(w);
        touched.insert(q);
      }
    }
    for (const auto& q : touched) {
      auto c = pair_counts.find(q);
      if (c == pair_counts.end()) continue;
      if (c->second <= 0) {
        pair_counts.erase(c);
        where.erase(q);
      } else {
        queue.push({c->second, q});
      }
    }
  }
  return Vocab(std::move(vocab), "<built vocabulary>");
}

}  // namespace afloc::text
