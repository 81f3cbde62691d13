#include "afloc/text/tokenizer.h"

#include "afloc/common/error.h"
#include "afloc/text/unicode.h"

namespace afloc::text {

Tokenizer::Tokenizer(Vocab vocab, TokenizerOptions options)
    : vocab_(std::move(vocab)), options_(std::move(options)) {
  if (options_.max_length < 2) {
    throw Error("tokenizer: max_length " + std::to_string(options_.max_length) +
                " leaves no room for [CLS] and [SEP]");
  }
}

std::vector<std::string> Tokenizer::pre_tokenize(const std::string& text) const {
  std::u32string s = unicode::decode_utf8(text);
  // BertNormalizer, in the order tokenizers applies it.
  if (options_.clean_text) {
    std::u32string t;
    t.reserve(s.size());
    for (char32_t c : s) {
      const bool ws = c == U'\t' || c == U'\n' || c == U'\r' || unicode::is_whitespace(c);
      if (c == 0 || c == 0xFFFD || (!ws && unicode::is_other(c))) continue;
      t.push_back(ws ? U' ' : c);
    }
    s.swap(t);
  }
  if (options_.handle_chinese_chars) {
    std::u32string t;
    t.reserve(s.size());
    for (char32_t c : s) {
      if (unicode::is_cjk(c)) {
        t.push_back(U' ');
        t.push_back(c);
        t.push_back(U' ');
      } else {
        t.push_back(c);
      }
    }
    s.swap(t);
  }
  if (options_.strip_accents) {
    std::u32string t;
    for (char32_t c : unicode::nfd(s)) {
      if (!unicode::is_nonspacing_mark(c)) t.push_back(c);
    }
    s.swap(t);
  }
  if (options_.lowercase) s = unicode::char_lower(s);

  // BertPreTokenizer: split on whitespace, isolate each punctuation character.
  std::vector<std::string> words;
  std::u32string cur;
  auto flush = [&] {
    if (!cur.empty()) {
      words.push_back(unicode::encode_utf8(cur));
      cur.clear();
    }
  };
  for (char32_t c : s) {
    if (c == U'\t' || c == U'\n' || c == U'\r' || unicode::is_whitespace(c)) {
      flush();
    } else if (unicode::is_bert_punctuation(c)) {
      flush();
      words.push_back(unicode::encode_utf8(std::u32string(1, c)));
    } else {
      cur.push_back(c);
    }
  }
  flush();
  return words;
}

std::vector<std::string> Tokenizer::wordpiece(const std::string& word) const {
  const std::u32string chars = unicode::decode_utf8(word);
  const std::string& unk = vocab_.token(vocab_.unk_id());
  if (static_cast<int>(chars.size()) > options_.max_input_chars_per_word) return {unk};
  std::vector<std::string> pieces;
  size_t start = 0;
  while (start < chars.size()) {
    size_t end = chars.size();
    std::string found;
    while (start < end) {
      std::string sub = unicode::encode_utf8(chars.substr(start, end - start));
      if (start > 0) sub = options_.continuing_prefix + sub;
      if (vocab_.contains(sub)) {
        found = std::move(sub);
        break;
      }
      --end;
    }
    if (found.empty()) return {unk};
    pieces.push_back(std::move(found));
    start = end;
  }
  return pieces;
}

Encoding Tokenizer::encode(const std::string& text, bool pad) const {
  std::vector<std::string> pieces;
  for (const auto& w : pre_tokenize(text)) {
    for (auto& p : wordpiece(w)) pieces.push_back(std::move(p));
  }
  const size_t room = static_cast<size_t>(options_.max_length) - 2;
  if (pieces.size() > room) pieces.resize(room);

  Encoding e;
  e.tokens.reserve(static_cast<size_t>(options_.max_length));
  e.tokens.push_back(vocab_.token(vocab_.cls_id()));
  for (auto& p : pieces) e.tokens.push_back(std::move(p));
  e.tokens.push_back(vocab_.token(vocab_.sep_id()));
  e.n_real = static_cast<int64_t>(e.tokens.size());
  for (const auto& t : e.tokens) e.input_ids.push_back(vocab_.id(t));
  e.attention_mask.assign(e.tokens.size(), 1);
  if (pad) {
    const auto total = static_cast<size_t>(options_.max_length);
    const std::string& pad_token = vocab_.token(vocab_.pad_id());
    while (e.tokens.size() < total) {
      e.tokens.push_back(pad_token);
      e.input_ids.push_back(vocab_.pad_id());
      e.attention_mask.push_back(0);
    }
  }
  e.token_type_ids.assign(e.tokens.size(), 0);
  return e;
}

std::vector<Encoding> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                              bool pad) const {
  std::vector<Encoding> out;
  out.reserve(texts.size());
  for (const auto& t : texts) out.push_back(encode(t, pad));
  return out;
}

}  // namespace afloc::text
