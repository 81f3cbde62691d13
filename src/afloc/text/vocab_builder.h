#pragma once
/// Trains a WordPiece vocabulary from a corpus (for models trained from scratch), the way
/// Hugging Face's WordPieceTrainer does: BPE merges over characters, continuation pieces
/// prefixed with "##", most frequent pair first.
#include <cstdint>
#include <string>
#include <vector>

#include "afloc/text/tokenizer.h"
#include "afloc/text/vocab.h"

namespace afloc::text {

struct VocabBuildOptions {
  int64_t size = 4000;        ///< target vocabulary size, special tokens included
  int64_t min_frequency = 2;  ///< a pair must occur at least this often to be merged
  bool lowercase = true;      ///< lowercase before splitting (AFLoc text is lowercased anyway)
  std::vector<std::string> special_tokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  std::string continuing_prefix = "##";
};

/// Builds the vocabulary: special tokens, then every character seen (plain and "##"-prefixed), then
/// merged pieces in merge order, until `size` or no pair is frequent enough. Ties between equally
/// frequent pairs are broken by the pieces' ids, so the result is deterministic.
Vocab build_wordpiece_vocab(const std::vector<std::string>& texts, const VocabBuildOptions& options);

}  // namespace afloc::text
