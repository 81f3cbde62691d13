// Golden: the authors' zero-shot classification (classification/prompts.py get_all_text_prompts,
// AFLocCLS.set_cls_feature, ZeroShotClassificationHead.forward) on classification_case: prompt
// strings, their cleaned forms, the averaged class embeddings and the scores.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "afloc/common/error.h"
#include "afloc/infer/classifier.h"
#include "afloc/infer/prompt_bank.h"
#include "afloc/io/tensor_file.h"
#include "afloc/text/clean.h"
#include "golden.h"
#include "tensor_compare.h"

namespace afloc::test {
namespace {

TEST(GoldenClassification, PromptBanksHeadAndScoresMatchTheAuthors) {
  const auto files = golden_files("classification_case", ".json");
  AFLOC_REQUIRE_CASES(files, "classification_case*.json");
  for (const auto& file : files) {
    const auto j = nlohmann::json::parse(read_file(file));
    const io::TensorMap t = io::load_tensor_file(file.substr(0, file.size() - 5) + ".pt");
    for (const auto& [name, c] : j.at("cases").items()) {
      SCOPED_TRACE(file + " case " + name);
      // The authors' --multi_class flag means pos/neg pairs per class (multi-label); without it a
      // softmax runs over the classes (single-label): our binary and multiclass modes.
      const bool pairs = c.at("multi_class").get<bool>();
      const auto cats = c.at("categories").get<std::vector<std::string>>();
      std::vector<infer::ClassPrompts> classes;
      if (c.at("modality") == "Chest X-ray") {
        for (const auto& cat : cats) classes.push_back(infer::cxr_class_prompts(cat));
      } else {
        const auto all = infer::template_class_prompts(c.at("dataset_arg"));
        for (const auto& cat : cats) {
          const auto it = std::find_if(all.begin(), all.end(), [&](const infer::ClassPrompts& p) { return p.name == cat; });
          ASSERT_NE(it, all.end()) << cat;
          classes.push_back(*it);
        }
      }
      // 1. Prompt strings, exactly.
      const auto unique = c.at("teg_unique_cleaned_text").get<std::vector<std::string>>();
      std::vector<std::vector<int64_t>> pos_rows, neg_rows;
      for (size_t k = 0; k < cats.size(); ++k) {
        const auto& want = c.at("prompts").at(cats[k]);
        EXPECT_EQ(classes[k].pos, want.at("pos").get<std::vector<std::string>>()) << cats[k];
        EXPECT_EQ(classes[k].neg, want.at("neg").get<std::vector<std::string>>()) << cats[k];
        // 2. Cleaned prompts map onto the authors' unique embedding rows.
        auto rows = [&](const std::vector<std::string>& prompts, const nlohmann::json& index) {
          std::vector<int64_t> r;
          for (size_t p = 0; p < prompts.size(); ++p) {
            const std::string cleaned = text::clean_prompt(prompts[p]);
            const auto at = std::find(unique.begin(), unique.end(), cleaned);
            EXPECT_NE(at, unique.end()) << "'" << cleaned << "' (from '" << prompts[p] << "')";
            r.push_back(at - unique.begin());
            EXPECT_EQ(r.back(), index.at(p).get<int64_t>()) << prompts[p];
          }
          return r;
        };
        pos_rows.push_back(rows(classes[k].pos, want.at("pos_teg_index")));
        neg_rows.push_back(rows(classes[k].neg, want.at("neg_teg_index")));
      }
      // 3. Class head = mean of the prompts' (unnormalised) embeddings; 4. scores.
      const torch::Tensor teg = io::require(t, name + ".teg_unique", file);
      infer::ClassHead head;
      head.names = cats;
      head.mode = pairs ? infer::ClassifyMode::kBinary : infer::ClassifyMode::kMultiClass;
      head.pos = infer::mean_rows(teg, pos_rows);
      expect_close("pos_cls_embed", head.pos, io::require(t, name + ".pos_cls_embed", file), 1e-6);
      if (pairs) {
        head.neg = infer::mean_rows(teg, neg_rows);
        expect_close("neg_cls_embed", head.neg, io::require(t, name + ".neg_cls_embed", file), 1e-6);
      }
      const torch::Tensor img = io::require(t, name + ".img_emb_g", file);
      expect_close("pred", infer::class_scores(img, head), io::require(t, name + ".pred", file), 1e-6);
      expect_close("post_processed", infer::class_probabilities(img, head), io::require(t, name + ".post_processed", file),
                   1e-6);
    }
  }
}

}  // namespace
}  // namespace afloc::test
