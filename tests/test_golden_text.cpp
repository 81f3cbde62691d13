// Golden: AFLoc text cleaning and BERT WordPiece tokenization vs the authors' process_text run with
// Hugging Face `tokenizers` (every text_preprocessing*.jsonl row). Match: exact.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "afloc/common/error.h"
#include "afloc/text/clean.h"
#include "afloc/text/tokenizer.h"
#include "golden.h"

namespace afloc::test {

std::string bert_vocab_path() {
  const char* env = std::getenv("AFLOC_BERT_VOCAB");
  if (env != nullptr && *env != '\0') return env;
  return source_dir() + "/../shared/vocab/bert-base-cased-vocab.txt";
}

namespace {

std::vector<int64_t> ids_of(const nlohmann::json& j) { return j.get<std::vector<int64_t>>(); }

TEST(GoldenText, CleaningAndTokenizationMatchTheAuthors) {
  const auto files = golden_files("text_preprocessing", ".jsonl");
  AFLOC_REQUIRE_CASES(files, "text_preprocessing*.jsonl");
  const text::Vocab vocab = text::Vocab::load(bert_vocab_path());
  ASSERT_EQ(vocab.size(), 28996);
  const text::Tokenizer cased(vocab);  // AFLoc goldens: no lowercase, no accent stripping
  text::TokenizerOptions lower_opts;
  lower_opts.lowercase = true;
  lower_opts.strip_accents = true;
  const text::Tokenizer bioclinical_default(vocab, lower_opts);

  int rows = 0, mismatches = 0;
  for (const auto& file : files) {
    std::ifstream in(file);
    std::string line;
    int line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      if (line.empty()) continue;
      const auto j = nlohmann::json::parse(line);
      const std::string raw = j.at("raw");
      SCOPED_TRACE(file + ":" + std::to_string(line_no) + " raw=" + raw);
      ++rows;
      const std::string cleaned = text::clean_prompt(raw);
      EXPECT_EQ(cleaned, j.at("cleaned").get<std::string>());
      const text::Encoding e = cased.encode(j.at("cleaned").get<std::string>());
      EXPECT_EQ(e.input_ids, ids_of(j.at("input_ids")));
      EXPECT_EQ(e.attention_mask, ids_of(j.at("attention_mask")));
      EXPECT_EQ(e.token_type_ids, ids_of(j.at("token_type_ids")));
      EXPECT_EQ(e.tokens, j.at("tokens").get<std::vector<std::string>>());
      EXPECT_EQ(e.n_real, j.at("n_real_tokens").get<int64_t>());
      if (j.contains("raw_tokenized")) {
        const auto& rt = j.at("raw_tokenized");
        if (rt.contains("cased")) {
          const text::Encoding r = cased.encode(raw, /*pad=*/false);
          EXPECT_EQ(r.input_ids, ids_of(rt.at("cased").at("input_ids")));
          EXPECT_EQ(r.tokens, rt.at("cased").at("tokens").get<std::vector<std::string>>());
        }
        if (rt.contains("hf_bioclinicalbert_default")) {
          const text::Encoding r = bioclinical_default.encode(raw, /*pad=*/false);
          EXPECT_EQ(r.input_ids, ids_of(rt.at("hf_bioclinicalbert_default").at("input_ids")));
        }
      }
      if (::testing::Test::HasFailure()) ++mismatches;
    }
  }
  std::printf("[golden] text_preprocessing: %d rows from %zu file(s), rows with a mismatch: %d\n", rows,
              files.size(), mismatches);
  EXPECT_GT(rows, 0);
}

}  // namespace
}  // namespace afloc::test
