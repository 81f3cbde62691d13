#include "afloc/model/text_encoder.h"

#include <algorithm>
#include <limits>

#include "afloc/common/error.h"

namespace afloc::model {

TokenTable::TokenTable(const text::Vocab& vocab) : sep_id(vocab.sep_id()) {
  const auto n = static_cast<size_t>(vocab.size());
  continuation.resize(n);
  bracket.resize(n);
  dot.resize(n);
  piece.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& t = vocab.tokens()[i];
    continuation[i] = t.rfind("##", 0) == 0;
    bracket[i] = !t.empty() && t[0] == '[';
    dot[i] = t == ".";
    piece[i] = continuation[i] ? t.substr(2) : t;
  }
}

const std::vector<std::string>& negation_words() {
  static const std::vector<std::string> words{"no", "not", "without", "negative"};
  return words;
}

Aggregation build_aggregation(const torch::Tensor& ids_in, const TokenTable& table) {
  TORCH_CHECK(ids_in.dim() == 2, "token ids must be (B, T), got ", ids_in.sizes());
  const torch::Tensor ids = ids_in.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t b = ids.size(0), t = ids.size(1);
  const auto vocab_size = static_cast<int64_t>(table.continuation.size());
  Aggregation agg;
  agg.word_matrix = torch::zeros({b, t, t});
  agg.sent_matrix = torch::zeros({b, t, t});
  agg.empty_sentence = torch::zeros({b, t}, torch::kBool);
  agg.sent_negated = torch::zeros({b, t}, torch::kBool);
  agg.word_lens = torch::zeros({b}, torch::kLong);
  agg.sent_lens = torch::zeros({b}, torch::kLong);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto w_a = agg.word_matrix.accessor<float, 3>();
  auto s_a = agg.sent_matrix.accessor<float, 3>();
  auto e_a = agg.empty_sentence.accessor<bool, 2>();
  auto n_a = agg.sent_negated.accessor<bool, 2>();

  for (int64_t r = 0; r < b; ++r) {
    // Words: a token that is not a "##" continuation starts a new unit; [SEP] closes the list.
    std::vector<int64_t> first_token;  // unit -> id of its first piece
    std::vector<int64_t> pieces;       // unit -> number of pieces
    std::vector<std::string> word;     // unit -> its text (pieces joined)
    int64_t sep_unit = -1;
    for (int64_t i = 0; i < t; ++i) {
      const int64_t id = ids_a[r][i];
      if (id < 0 || id >= vocab_size) {
        throw Error("token ids row " + std::to_string(r) + " position " + std::to_string(i) +
                    ": id " + std::to_string(id) + " outside the vocabulary of " +
                    std::to_string(vocab_size));
      }
      if (id == table.sep_id) {
        sep_unit = static_cast<int64_t>(first_token.size());
        if (sep_unit >= t) throw Error("token ids row " + std::to_string(r) + ": too many units");
        first_token.push_back(id);
        pieces.push_back(1);
        word.emplace_back("[SEP]");
        w_a[r][sep_unit][i] = 1.0f;
        break;
      }
      if (!table.continuation[static_cast<size_t>(id)] || first_token.empty()) {
        first_token.push_back(id);
        pieces.push_back(0);
        word.emplace_back();
      }
      word.back() += table.piece[static_cast<size_t>(id)];
      const auto u = static_cast<int64_t>(first_token.size()) - 1;
      w_a[r][u][i] = 1.0f;
      ++pieces.back();
    }
    if (sep_unit < 0) {
      throw Error("token ids row " + std::to_string(r) + ": no [SEP] token (id " +
                  std::to_string(table.sep_id) + ")");
    }
    const auto n_units = static_cast<int64_t>(first_token.size());
    agg.n_words.push_back(n_units);
    int64_t non_bracket = 0;
    for (int64_t u = 0; u < n_units; ++u) {
      if (!table.bracket[static_cast<size_t>(first_token[static_cast<size_t>(u)])]) ++non_bracket;
    }
    agg.word_lens[r] = non_bracket + 1;

    // Sentences: the unit before [SEP] is renamed "*" and [SEP] becomes the last "."; a word is
    // "." only if it is the single piece "."; sentence i spans the units between two dots.
    std::vector<int64_t> dots;
    for (int64_t u = 1; u < n_units; ++u) {
      const bool is_dot = pieces[static_cast<size_t>(u)] == 1 &&
                          table.dot[static_cast<size_t>(first_token[static_cast<size_t>(u)])];
      if (u == sep_unit || (is_dot && u != sep_unit - 1)) dots.push_back(u);
    }
    s_a[r][0][0] = 1.0f;  // [CLS]
    int64_t start = 1;
    for (size_t i = 0; i < dots.size(); ++i) {
      const int64_t end = dots[i];
      const int64_t row = static_cast<int64_t>(i) + 1;
      if (end > start) {
        for (int64_t u = start; u < end; ++u) {
          s_a[r][row][u] = 1.0f / static_cast<float>(end - start);
          const auto& cues = negation_words();
          if (std::find(cues.begin(), cues.end(), word[static_cast<size_t>(u)]) != cues.end()) n_a[r][row] = true;
        }
      } else {
        e_a[r][row] = true;  // mean over an empty slice: NaN in the authors' code
      }
      start = end + 1;
    }
    const auto n_sent = static_cast<int64_t>(dots.size());
    s_a[r][n_sent + 1][sep_unit] = 1.0f;  // [SEP]
    agg.n_sentences.push_back(n_sent);
    agg.sent_lens[r] = n_sent + 1;
  }
  return agg;
}

TextEmbeddings aggregate(const torch::Tensor& hidden_sum, const Aggregation& agg) {
  // hidden_sum: (B, T, D)
  TORCH_CHECK(hidden_sum.dim() == 3, "hidden states must be (B, T, D), got ", hidden_sum.sizes());
  TORCH_CHECK(hidden_sum.size(1) == agg.word_matrix.size(1), "hidden length ", hidden_sum.size(1),
              " != token length ", agg.word_matrix.size(1));
  const auto opts = hidden_sum.options();
  const int64_t t = hidden_sum.size(1);
  const torch::Tensor words = torch::bmm(agg.word_matrix.to(opts), hidden_sum);  // (B, T, D)
  torch::Tensor sents = torch::bmm(agg.sent_matrix.to(opts), words);              // (B, T, D)
  const torch::Tensor empty = agg.empty_sentence.to(hidden_sum.device()).unsqueeze(-1);
  // NaN only in the forward value: torch::where sends no gradient into the NaN branch, so one
  // empty caption cannot poison the gradients of the others.
  sents = torch::where(empty, torch::full({}, std::numeric_limits<float>::quiet_NaN(), opts), sents);
  TextEmbeddings e;
  e.words = words.permute({0, 2, 1});
  e.sentences = sents.permute({0, 2, 1});
  e.report = words.sum(1) / static_cast<double>(t);
  e.word_lens = agg.word_lens;
  e.sent_lens = agg.sent_lens;
  e.sent_negated = agg.sent_negated;
  return e;
}

TextEncoderImpl::TextEncoderImpl(const AflocConfig& c, const text::Vocab& vocab)
    : table(vocab), last_n_layers(c.text.last_n_layers) {
  if (vocab.size() != c.bert.vocab_size) {
    throw Error("vocabulary " + vocab.origin() + " has " + std::to_string(vocab.size()) +
                " tokens but config bert.vocab_size = " + std::to_string(c.bert.vocab_size));
  }
  model = register_module("model", BertModel(c.bert));
}

TextEmbeddings TextEncoderImpl::forward(const torch::Tensor& ids, const torch::Tensor& attention_mask,
                                        const torch::Tensor& token_type) {
  const Aggregation agg = build_aggregation(ids, table);
  // BERT runs on the batch's longest caption only: padded positions never reach a unit (words,
  // sentences and the report are built from real tokens), and with right padding the real tokens'
  // states do not depend on the pads, so the result is the same at a fraction of the cost (captions
  // are ~25 of the 97 tokens).
  const int64_t t = ids.size(1);
  const int64_t longest = std::max<int64_t>(1, attention_mask.sum(1).max().item<int64_t>());
  const bool right_padded = attention_mask.narrow(1, 0, longest).sum().item<int64_t>() == attention_mask.sum().item<int64_t>();
  const int64_t len = right_padded ? longest : t;
  const std::vector<torch::Tensor> states =
      model(ids.narrow(1, 0, len), attention_mask.narrow(1, 0, len), token_type.narrow(1, 0, len), last_n_layers);
  torch::Tensor sum = states[0];
  for (size_t i = 1; i < states.size(); ++i) sum = sum + states[i];
  if (len < t) sum = torch::constant_pad_nd(sum, {0, 0, 0, t - len});  // (B, len, D) -> (B, T, D)
  return aggregate(sum, agg);
}

}  // namespace afloc::model
