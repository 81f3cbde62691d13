#include "afloc/text/clean.h"

#include <algorithm>
#include <numeric>

#include "afloc/common/seed.h"
#include "afloc/text/unicode.h"

namespace afloc::text {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// re.split("[0-9]+\.", t) followed by str.split(".") on each part. A maximal ASCII digit run that
// is directly followed by '.' is a separator together with the dot; any other '.' is one too.
std::vector<std::string> split_pieces(const std::string& t) {
  std::vector<std::string> pieces;
  std::string cur;
  size_t i = 0;
  while (i < t.size()) {
    if (is_digit(t[i])) {
      size_t j = i;
      while (j < t.size() && is_digit(t[j])) ++j;
      if (j < t.size() && t[j] == '.') {
        pieces.push_back(cur);
        cur.clear();
        i = j + 1;
      } else {
        cur.append(t, i, j - i);
        i = j;
      }
      continue;
    }
    if (t[i] == '.') {
      pieces.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(t[i]);
    }
    ++i;
  }
  pieces.push_back(cur);
  return pieces;
}

}  // namespace

std::vector<std::string> clean_sentences(const std::string& raw) {
  std::string t = raw;
  std::replace(t.begin(), t.end(), '\n', ' ');
  std::vector<std::string> sentences;
  for (const std::string& piece : split_pieces(t)) {
    // The authors replace "\ufffd\ufffd" by a space first; U+FFFD is not \w, so the \w runs are
    // the same either way.
    const std::u32string lower = unicode::python_lower(unicode::decode_utf8(piece));
    std::vector<std::u32string> runs;
    std::u32string run;
    for (char32_t c : lower) {
      if (unicode::is_python_word(c)) {
        run.push_back(c);
      } else if (!run.empty()) {
        runs.push_back(run);
        run.clear();
      }
    }
    if (!run.empty()) runs.push_back(run);
    if (runs.size() <= 1) continue;
    std::string sentence;
    for (const auto& r : runs) {
      std::string ascii;
      for (char32_t c : r) {
        if (c < 0x80) ascii.push_back(static_cast<char>(c));
      }
      if (ascii.empty()) continue;
      if (!sentence.empty()) sentence.push_back(' ');
      sentence += ascii;
    }
    sentences.push_back(sentence);
  }
  return sentences;
}

std::string clean_prompt(const std::string& raw) {
  std::string out;
  for (const auto& s : clean_sentences(raw)) {
    if (!out.empty()) out.push_back(' ');
    out += s;
  }
  return out;
}

std::string join_caption(const std::vector<std::string>& sentences) {
  std::string out;
  for (size_t i = 0; i < sentences.size(); ++i) {
    if (i > 0) out += ". ";
    out += sentences[i];
  }
  return out;
}

std::string sample_caption(const std::vector<std::string>& sentences, std::mt19937_64& rng) {
  if (sentences.empty()) return "";
  if (sentences.size() < 2) return sentences[0];
  const auto n = static_cast<uint64_t>(sentences.size());
  // numpy randint(1, n) draws k from [1, n-1]; choice(..., k, replace=False) is a random ordered
  // k-subset: the first k steps of a Fisher-Yates shuffle. Drawn with index_below, not
  // std::uniform_int_distribution / std::shuffle, so that a seed gives the same captions with every
  // standard library.
  const uint64_t k = 1 + index_below(rng(), n - 1);
  std::vector<size_t> order(sentences.size());
  std::iota(order.begin(), order.end(), 0);
  std::vector<std::string> chosen;
  for (uint64_t i = 0; i < k; ++i) {
    std::swap(order[i], order[i + index_below(rng(), n - i)]);
    chosen.push_back(sentences[order[i]]);
  }
  return join_caption(chosen);
}

}  // namespace afloc::text
