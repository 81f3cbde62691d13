// Prompt banks and prompt files, classification metrics and the labels reader, hand-checkable.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "afloc/common/error.h"
#include "afloc/eval/classification_eval.h"
#include "afloc/eval/metrics.h"
#include "afloc/eval/opt_threshold.h"
#include "afloc/infer/prompt_bank.h"

namespace fs = std::filesystem;

namespace afloc {
namespace {

std::string tmp_file(const std::string& name, const std::string& text) {
  const fs::path p = fs::path(::testing::TempDir()) / ("afloc_pm_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(p) << text;
  return p.string();
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(PromptBank, ChestXrayTableFollowsTheAuthorsProduct) {
  const auto p = infer::cxr_class_prompts("Pneumothorax");
  EXPECT_EQ(p.pos.size(), 6u * 1u * 7u);  // severity x subtype x location
  EXPECT_EQ(p.pos.front(), "Pneumothorax: pneumothorax right");
  EXPECT_EQ(p.neg, std::vector<std::string>{"no Pneumothorax. "});
  // "effusion" repeats a subtype, and the product keeps the repeat.
  EXPECT_EQ(infer::cxr_class_prompts("Effusion").pos.size(), 5u * 3u * 3u);
  EXPECT_EQ(infer::cxr_class_prompts("pleural effusion").pos.front(), "pleural effusion: bilateral pleural effusion right");
  EXPECT_EQ(infer::cxr_class_prompts("No Finding").pos, std::vector<std::string>{"No finding"});
  EXPECT_EQ(infer::cxr_class_prompts("Lung Cyst").pos, std::vector<std::string>{"Findings suggesting lung cyst"});
}

TEST(PromptBank, BuiltinsAreValidAndNamed) {
  for (const auto& name : infer::builtin_bank_names()) {
    const auto b = infer::builtin_bank(name);
    EXPECT_NO_THROW(infer::validate(b)) << name;
    EXPECT_EQ(b.name, name);
  }
  EXPECT_EQ(infer::builtin_bank("chexpert5").classes.size(), 5u);
  EXPECT_EQ(infer::builtin_bank("nih14").classes.size(), 14u);
  EXPECT_EQ(infer::builtin_bank("phantom").classes.size(), 8u);
  const auto w = infer::builtin_bank("wsss4luad3");
  EXPECT_EQ(w.mode, infer::ClassifyMode::kMultiClass);
  EXPECT_EQ(w.classes[2].pos, std::vector<std::string>{"invasive carcinoma is present."});
  EXPECT_EQ(infer::builtin_bank("fundus-dr").classes.size(), 5u);
  const std::string e = error_of([] { infer::builtin_bank("chexpert"); });
  EXPECT_NE(e.find("chexpert5"), std::string::npos) << e;  // lists the known banks
}

TEST(PromptBank, JsonFileExpandsCategoriesAndOverridesClasses) {
  const std::string f = tmp_file("bank.json", R"({"mode": "binary", "categories": ["Edema", "Lung Cyst"],
    "classes": {"Edema": {"pos": ["Edema is present."]}, "Foreign body": {"pos": ["A foreign body."], "neg": ["No foreign body."]},
                "Hernia": {"pos": ["Hiatal hernia."]}}})");
  const auto b = infer::read_prompt_bank(f);
  ASSERT_EQ(b.classes.size(), 4u);
  EXPECT_EQ(b.classes[0].pos, std::vector<std::string>{"Edema is present."});
  EXPECT_EQ(b.classes[0].neg, std::vector<std::string>{"no Edema. "});  // kept from the table
  EXPECT_EQ(b.classes[1].pos, std::vector<std::string>{"Findings suggesting lung cyst"});
  EXPECT_EQ(b.classes[2].neg, std::vector<std::string>{"No foreign body."});
  EXPECT_EQ(b.classes[3].neg, std::vector<std::string>{"no Hernia. "});  // default negative in binary mode
  const std::string p = tmp_file("path.json", R"({"modality": "pathology", "dataset": "SICAPV2", "categories": ["G3", "NC"]})");
  const auto pb = infer::read_prompt_bank(p);
  EXPECT_EQ(pb.mode, infer::ClassifyMode::kMultiClass);
  EXPECT_EQ(pb.classes[0].pos, std::vector<std::string>{"presence of prostate cancer, gleason pattern 3."});
}

TEST(PromptBank, BadFilesAreErrorsNamingFileAndKey) {
  struct Case {
    const char* json;
    const char* expect;
  };
  for (const auto& c : std::vector<Case>{
           {R"({"clases": {}})", "unknown key 'clases'"},
           {R"({"classes": {"A": {"pos": []}}})", "'A' has no positive prompts"},
           {R"({"classes": {"A": {"pos": [3]}}})", "is not a string"},
           {R"({"classes": {"A": {"pos": ["a"], "negs": ["b"]}}})", "unknown key 'negs'"},
           {R"({"mode": "multi", "classes": {"A": {"pos": ["a"]}}})", "'multi'"},
           {R"({"mode": "multiclass", "classes": {"A": {"pos": ["a"]}}})", "at least 2 classes"},
           {R"({"modality": "pathology", "categories": ["G3"]})", "need a \"dataset\""},
           {R"({"modality": "pathology", "dataset": "SICAPV2", "categories": ["G9"]})", "'G9'"},
           {R"([1, 2])", "expected a JSON object"},
           {R"({"classes": {"A": {"pos": ["a", " "]}}})", "'A' has an empty prompt"},
           {R"({"classes": )", "bad.json"},
       }) {
    const std::string f = tmp_file("bad.json", c.json);
    const std::string e = error_of([&] { infer::read_prompt_bank(f); });
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.json << " -> " << e;
    EXPECT_NE(e.find("bad.json"), std::string::npos) << e;
  }
}

TEST(ClassificationMetrics, RocAucHandCases) {
  EXPECT_DOUBLE_EQ(eval::roc_auc({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1}), 0.75);  // sklearn's doc example
  EXPECT_DOUBLE_EQ(eval::roc_auc({0.5, 0.5, 0.5}, {0, 1, 1}), 0.5);           // all tied: one half
  EXPECT_DOUBLE_EQ(eval::roc_auc({1, 2, 3}, {1, 0, 0}), 0.0);
  EXPECT_DOUBLE_EQ(eval::roc_auc({0.2, 0.2, 0.9, 0.1}, {1, 0, 1, 0}), (1.0 + 0.5 + 1.0 + 1.0) / 4.0);
  EXPECT_TRUE(std::isnan(eval::roc_auc({0.1, 0.2}, {1, 1})));
  EXPECT_THROW(eval::roc_auc({0.1}, {1, 0}), Error);
}

TEST(ClassificationMetrics, BalancedAccuracyIsTheMeanRecallOverTrueClasses) {
  // class 0: 2/3 right, class 1: 1/1, class 2 only predicted (not in y_true: not averaged).
  EXPECT_DOUBLE_EQ(eval::balanced_accuracy({0, 0, 0, 1}, {0, 0, 2, 1}), (2.0 / 3.0 + 1.0) / 2.0);
  EXPECT_TRUE(std::isnan(eval::balanced_accuracy({}, {})));
}

TEST(ClassificationMetrics, LabelsCsvPerClassColumnsOrOneLabelColumn) {
  const auto l = eval::read_class_labels(tmp_file("l.csv", "image,edema,Pneumothorax\na.png,1,0\nb.png,-1.0,1.0\nc.png,,0\n"),
                                         {"Edema", "Pneumothorax"});
  ASSERT_EQ(l.y.size(), 3u);
  EXPECT_EQ(l.y[0], (std::vector<int>{1, 0}));
  EXPECT_EQ(l.y[1], (std::vector<int>{-1, 1}));
  EXPECT_EQ(l.y[2], (std::vector<int>{-1, 0}));
  const auto m = eval::read_class_labels(tmp_file("m.csv", "path,label\nx.png,stroma\n"), {"normal", "stroma", "tumor"});
  EXPECT_EQ(m.y[0], (std::vector<int>{0, 1, 0}));
  std::string e = error_of([&] { eval::read_class_labels(tmp_file("n.csv", "image,Edema\na.png,2\n"), {"Edema"}); });
  EXPECT_NE(e.find("row 2 column Edema"), std::string::npos) << e;
  e = error_of([&] { eval::read_class_labels(tmp_file("o.csv", "image,Edema\na.png,1\n"), {"Edema", "Mass"}); });
  EXPECT_NE(e.find("Mass"), std::string::npos) << e;
  // MIMIC-CXR's CheXpert labels: rows are studies, a blank cell is a finding the report does not
  // mention (absent), -1.0 an uncertain one (unknown).
  const auto st = eval::read_class_labels(tmp_file("chexpert.csv",
                                                   "subject_id,study_id,Atelectasis,Edema,No Finding\n"
                                                   "10000032,50414267,,1.0,\n10000032,53189527,-1.0,0.0,\n10000033,50000001,,,1.0\n"),
                                          {"Edema", "Atelectasis"});
  EXPECT_TRUE(st.by_study);
  EXPECT_EQ(st.images, (std::vector<std::string>{"s50414267", "s53189527", "s50000001"}));
  EXPECT_EQ(st.y[0], (std::vector<int>{1, 0}));
  EXPECT_EQ(st.y[1], (std::vector<int>{0, -1}));
  EXPECT_EQ(st.y[2], (std::vector<int>{0, 0}));
  EXPECT_FALSE(l.by_study);  // an image-keyed file keeps blanks unknown (above)
  e = error_of([&] { eval::read_class_labels(tmp_file("p.csv", "subject,Edema\n1,1\n"), {"Edema"}); });
  EXPECT_NE(e.find("'image'"), std::string::npos) << e;  // no image, path or study_id column
  const auto s = eval::evaluate_classification({"A", "B"}, {{0.9, 0.2}, {0.1, 0.7}, {0.6, 0.4}}, {{1, 0}, {0, 1}, {0, -1}});
  EXPECT_DOUBLE_EQ(s.classes[0].auroc, 1.0);
  EXPECT_EQ(s.classes[1].n_pos + s.classes[1].n_neg, 2);  // the unknown cell is left out
  EXPECT_EQ(s.n_single_label, 2);
  EXPECT_DOUBLE_EQ(s.accuracy, 1.0);
}

TEST(Bootstrap, PercentileIndicesAreTheAuthors) {
  // compute_cis at level 0.05: sorted[int(0.025 R) - 1] and sorted[int(0.975 R) - 1].
  std::vector<double> v;
  for (int i = 1000; i >= 1; --i) v.push_back(i);  // reversed: the function sorts
  const eval::Interval ci = eval::percentile_interval(v);
  EXPECT_EQ(ci.lower, 25.0);
  EXPECT_EQ(ci.upper, 975.0);
  v.push_back(std::nan(""));  // NaN replicates are dropped, not sorted in
  EXPECT_EQ(eval::percentile_interval(v).upper, 975.0);
  std::vector<double> few(39, 1.0);  // int(0.025 * 39) - 1 < 0: no interval
  EXPECT_TRUE(std::isnan(eval::percentile_interval(few).lower));
}

TEST(Bootstrap, ResampleMeansPerCategoryAndMacro) {
  const std::vector<int64_t> cat = {0, 0, 1, 1, 2};
  const std::vector<double> val = {1.0, 3.0, 10.0, std::nan(""), 7.0};
  const auto [means, macro] = eval::resample_means(cat, val, 3, {0, 0, 1, 2, 3});
  EXPECT_DOUBLE_EQ(means[0], 5.0 / 3.0);  // 1, 1, 3
  EXPECT_DOUBLE_EQ(means[1], 10.0);       // the NaN value is left out
  EXPECT_TRUE(std::isnan(means[2]));      // category 2 missed by this resample
  EXPECT_DOUBLE_EQ(macro, (5.0 / 3.0 + 10.0) / 2.0);
  EXPECT_THROW(eval::resample_means(cat, val, 2, {4}), std::invalid_argument);
}

TEST(Bootstrap, IntervalOfAProportionHasTheBinomialWidth) {
  // 100 cases, 40 hits: the bootstrap interval of the hit rate is about 0.4 +- 1.96 sqrt(0.24 / 100)
  // = 0.304..0.496; a constant series has a zero-width interval; a seed gives the same resamples.
  std::vector<int64_t> cat(100, 0);
  std::vector<double> hit(100, 0.0);
  for (int i = 0; i < 40; ++i) hit[static_cast<size_t>(i * 5 / 2)] = 1.0;
  const auto samples = eval::bootstrap_samples(100, 1000, 7);
  ASSERT_EQ(samples.size(), 1000u);
  std::vector<double> rates, constant;
  for (const auto& s : samples) {
    ASSERT_EQ(s.size(), 100u);
    rates.push_back(eval::resample_means(cat, hit, 1, s).second);
    constant.push_back(eval::resample_means(cat, std::vector<double>(100, 0.25), 1, s).second);
  }
  const eval::Interval ci = eval::percentile_interval(rates);
  EXPECT_NEAR(ci.lower, 0.304, 0.03);
  EXPECT_NEAR(ci.upper, 0.496, 0.03);
  EXPECT_EQ(eval::percentile_interval(constant).lower, 0.25);
  EXPECT_EQ(eval::percentile_interval(constant).upper, 0.25);
  EXPECT_EQ(eval::bootstrap_samples(100, 3, 7)[2], samples[2]);
  EXPECT_NE(eval::bootstrap_samples(100, 3, 8)[2], samples[2]);
}

TEST(OptThreshold, NumpyArangeAndConfidence) {
  const auto a = eval::np_arange(0.2, 0.8, 0.1);
  ASSERT_EQ(a.size(), 7u);
  EXPECT_EQ(a[6], 0.8000000000000003);
  EXPECT_EQ(eval::np_arange(0.45, 0.55, 0.01).size(), 11u);
  EXPECT_DOUBLE_EQ(eval::confidence({NAN, -3.0f, 0.5f, 1.0f}), 0.5);
  EXPECT_DOUBLE_EQ(eval::confidence({5.0f}), 1.0);
}

}  // namespace
}  // namespace afloc
