#pragma once
/// AFLoc text encoder (SPEC §2): BERT, the last n hidden states SUMMED, word pieces summed into
/// words, sentence means, report vector = sum of word units / T. Reproduces the authors'
/// `BertEncoder.aggregate_tokens` / `aggregate_tokens_sent_as_units` with batched tensor ops.
#include <torch/torch.h>

#include "afloc/model/bert.h"
#include "afloc/model/config.h"
#include "afloc/text/vocab.h"

namespace afloc::model {

/// Per-token-id facts the aggregation needs (derived from the vocabulary strings).
struct TokenTable {
  explicit TokenTable(const text::Vocab& vocab);
  std::vector<uint8_t> continuation;  ///< token starts with "##"
  std::vector<uint8_t> bracket;       ///< token starts with "[" ([CLS], [SEP], [UNK], ...)
  std::vector<uint8_t> dot;           ///< token is "."
  std::vector<std::string> piece;     ///< token text without its "##" (to rebuild words)
  int64_t sep_id;
};

/// Text embeddings; T = token length (97). Unit lists: words = [CLS], words..., [SEP], zeros;
/// sentences = [CLS], sentence means..., [SEP], zeros.
struct TextEmbeddings {
  torch::Tensor words;      ///< (B, D, T)
  torch::Tensor sentences;  ///< (B, D, T); NaN unit for an empty sentence, as the authors' code
  torch::Tensor report;     ///< (B, D)
  torch::Tensor word_lens;  ///< (B) int64 CPU: non-bracket words + 1 (units the word loss reads)
  torch::Tensor sent_lens;  ///< (B) int64 CPU: sentences + 1
  torch::Tensor sent_negated;  ///< (B, T) bool CPU: sentence units holding a negation word
};

/// Word/sentence grouping for a batch of token ids (CPU). Exposed for tests and tools.
struct Aggregation {
  torch::Tensor word_matrix;      ///< (B, T, T) float: unit u = sum of tokens t with W[u, t] = 1
  torch::Tensor sent_matrix;      ///< (B, T, T) float: sentence unit = mean of word units
  torch::Tensor empty_sentence;   ///< (B, T) bool: sentence units whose mean is over nothing
  torch::Tensor sent_negated;     ///< (B, T) bool: sentence units with a word of negation_words()
  torch::Tensor word_lens, sent_lens;  ///< (B) int64
  std::vector<int64_t> n_words;        ///< word units incl. [CLS] and [SEP]
  std::vector<int64_t> n_sentences;    ///< sentences (without [CLS]/[SEP])
};

/// Words that mark a sentence as negated ("no", "not", "without", "negative"): the cue words of
/// NegEx-style report labellers that cover the phrasing of MIMIC-CXR's negative findings.
const std::vector<std::string>& negation_words();

/// Builds the aggregation for ids (B, T). Error if a row has no [SEP] or an id is out of range.
Aggregation build_aggregation(const torch::Tensor& ids, const TokenTable& table);

/// Applies the aggregation to summed hidden states (B, T, D).
TextEmbeddings aggregate(const torch::Tensor& hidden_sum, const Aggregation& agg);

class TextEncoderImpl : public torch::nn::Module {
 public:
  TextEncoderImpl(const AflocConfig& config, const text::Vocab& vocab);
  /// ids, attention_mask, token_type: (B, T) int64 on the module's device.
  TextEmbeddings forward(const torch::Tensor& ids, const torch::Tensor& attention_mask,
                         const torch::Tensor& token_type);

  BertModel model{nullptr};
  TokenTable table;
  int64_t last_n_layers;
};
TORCH_MODULE(TextEncoder);

}  // namespace afloc::model
