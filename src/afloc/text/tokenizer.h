#pragma once
/// BERT WordPiece tokenizer, token-for-token equal to Hugging Face `tokenizers` configured as
/// BertNormalizer + BertPreTokenizer + WordPiece + [CLS]/[SEP] post-processing, truncation and
/// padding (golden: text_preprocessing.jsonl).
#include <cstdint>
#include <string>
#include <vector>

#include "afloc/text/vocab.h"

namespace afloc::text {

/// Tokenizer settings. Defaults are those of the goldens and of AFLoc's text pipeline.
struct TokenizerOptions {
  bool clean_text = true;            ///< drop control chars and U+0000/U+FFFD, whitespace -> ' '
  bool handle_chinese_chars = true;  ///< put spaces around CJK ideographs
  bool strip_accents = false;        ///< NFD, then drop Mn (bert-base-cased: false)
  bool lowercase = false;            ///< per-char lowercase (bert-base-cased: false)
  int max_length = 97;               ///< tokens including [CLS] and [SEP] (AFLoc: 97)
  int max_input_chars_per_word = 100;  ///< longer words become [UNK]
  std::string continuing_prefix = "##";
};

/// One encoded text. `input_ids`, `attention_mask`, `token_type_ids` and `tokens` have
/// max_length entries when padded, n_real otherwise.
struct Encoding {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> attention_mask;
  std::vector<int64_t> token_type_ids;
  std::vector<std::string> tokens;
  int64_t n_real = 0;  ///< tokens before padding, [CLS] and [SEP] included
};

class Tokenizer {
 public:
  Tokenizer(Vocab vocab, TokenizerOptions options = {});

  /// Normalizer + pre-tokenizer: the words WordPiece sees.
  std::vector<std::string> pre_tokenize(const std::string& text) const;
  /// Greedy longest-match-first WordPiece of one word; [UNK] when any part is not in the vocab or
  /// the word is longer than max_input_chars_per_word characters.
  std::vector<std::string> wordpiece(const std::string& word) const;
  /// Full pipeline: [CLS] pieces [SEP], truncated to max_length (pieces cut, [SEP] kept) and, with
  /// pad, padded with [PAD] (attention 0).
  Encoding encode(const std::string& text, bool pad = true) const;
  std::vector<Encoding> encode_batch(const std::vector<std::string>& texts, bool pad = true) const;

  const Vocab& vocab() const { return vocab_; }
  const TokenizerOptions& options() const { return options_; }

 private:
  Vocab vocab_;
  TokenizerOptions options_;
};

}  // namespace afloc::text
