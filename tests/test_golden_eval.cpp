// Golden: the authors' localization path (localization.py Engine/Pipeline: raw dot product,
// scipy gaussian_filter, bilinear upsampling, margin + norm_heatmap) and metrics
// (localization/metrics.py), plus their dataset helpers (box_mapping, box2mask, rle2mask, mask resize).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "afloc/common/error.h"
#include "afloc/data/image.h"
#include "afloc/data/rle.h"
#include "afloc/eval/metrics.h"
#include "afloc/eval/opt_threshold.h"
#include "afloc/infer/heatmap.h"
#include "afloc/io/tensor_file.h"
#include "golden.h"
#include "tensor_compare.h"

namespace afloc::test {
namespace {

eval::Map to_map(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kFloat).contiguous();
  return eval::Map(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

void expect_metric(const std::string& what, double got, double want, double tol) {
  std::printf("[golden] %-48s got %.12g want %.12g\n", what.c_str(), got, want);
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << what;
  } else {
    EXPECT_NEAR(got, want, tol) << what;
  }
}

TEST(GoldenHeatmap, SmoothUpsampleMarginNormaliseAndMetricsMatchTheAuthors) {
  const auto files = golden_files("heatmap_case", ".pt");
  AFLOC_REQUIRE_CASES(files, "heatmap_case*.pt");
  for (const auto& file : files) {
    SCOPED_TRACE(file);
    const io::TensorMap c = io::load_tensor_file(file);
    const auto j = nlohmann::json::parse(read_file(file.substr(0, file.size() - 3) + ".json"));
    // The deep regions are image_encoder_case.pt img_emb_l[0] (per the case's iel_source).
    const io::TensorMap enc = io::load_tensor_file(golden_dir() + "/image_encoder_case.pt");
    const torch::Tensor regions = io::require(enc, "img_emb_l", "image_encoder_case.pt")[0];
    const torch::Tensor teg = io::require(c, "teg", file)[0];
    const torch::Tensor sim = infer::similarity_map(regions, teg);
    expect_close("heatmap sim_raw", sim, io::require(c, "sim_raw", file), 1e-5);
    const torch::Tensor smooth = infer::gaussian_smooth(io::require(c, "sim_raw", file), 1.5);
    expect_close("heatmap sim_smooth (gaussian_filter)", smooth, c.at("sim_smooth"), 1e-6);
    const torch::Tensor up = infer::upsample(c.at("sim_smooth"), 224, 224);
    expect_close("heatmap hmap (bilinear 224)", up, c.at("hmap"), 1e-6);
    const torch::Tensor norm = infer::normalize(c.at("hmap"), 14);
    expect_close("heatmap margin + norm [-1,1]", norm, c.at("heatmap_norm_margin"), 1e-5);
    expect_close("heatmap whole path from sim_raw", infer::heatmap(c.at("sim_raw"), 224), c.at("heatmap_norm_margin"), 1e-5);

    // Ground truth: the boxes mapped to 224 and summed.
    const auto& gt = j.at("gt");
    eval::Map mask(224 * 224, 0.0f);
    for (const auto& b : gt.at("boxes_xywh_orig")) {
      const auto m = eval::box_mapping(b.get<std::vector<double>>(), gt.at("orig_width").get<int64_t>(),
                                       gt.at("orig_height").get<int64_t>(), 224);
      eval::add_box(mask, m, 224, 224);
    }
    const torch::Tensor want_mask = c.at("gt_mask").to(torch::kFloat).flatten();
    EXPECT_TRUE(torch::equal(torch::tensor(mask), want_mask)) << "box2mask(box_mapping) differs";

    for (const char* variant : {"margin", "no_margin"}) {
      const torch::Tensor h = std::string(variant) == "margin" ? c.at("heatmap_norm_margin") : infer::normalize(c.at("hmap"), 0);
      const eval::Map hm = to_map(h);
      const auto& m = j.at("metrics").at(variant);
      for (const auto& row : m.at("per_threshold")) {
        const double t = row.at("threshold").get<double>();
        const std::string tag = std::string(variant) + " t=" + std::to_string(t);
        expect_metric("iou " + tag, eval::iou(mask, hm, t), row.at("iou").get<double>(), 1e-12);
        expect_metric("dice " + tag, eval::dice(mask, hm, t), row.at("dice").get<double>(), 1e-12);
        EXPECT_EQ(eval::predicted_pixels(hm, t), row.at("pred_pixels").get<int64_t>()) << tag;
      }
      expect_metric(std::string("cnr ") + variant, eval::cnr(mask, hm), m.at("cnr").get<double>(), 1e-5);
      std::vector<double> ious, dices;
      for (double t : eval::default_thresholds()) {
        ious.push_back(eval::iou(mask, hm, t));
        dices.push_back(eval::dice(mask, hm, t));
      }
      expect_metric(std::string("mean iou ") + variant, eval::nanmean(ious),
                    m.at("mean_over_thresholds").at("iou").get<double>(), 1e-12);
      expect_metric(std::string("mean dice ") + variant, eval::nanmean(dices),
                    m.at("mean_over_thresholds").at("dice").get<double>(), 1e-12);
    }
  }
}

// The localization_pipeline fixture per item: the raw similarity map iel[i] @ teg ([19,19]) and the
// ground-truth mask from its boxes (summed, as box2mask; empty for a negative).
struct PipelineItem {
  std::string path, category;
  int label = 0;
  torch::Tensor sim;
  eval::Map gt;
};

std::vector<PipelineItem> pipeline_items(const nlohmann::json& j, const std::string& file) {
  const io::TensorMap c = io::load_tensor_file(file.substr(0, file.size() - 5) + ".pt");
  const torch::Tensor iel = io::require(c, "iel", file);
  std::vector<PipelineItem> out;
  const auto& items = j.at("items");
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    PipelineItem p;
    p.path = it.at("path");
    p.category = it.at("category");
    p.label = it.at("label");
    const torch::Tensor teg = io::require(c, "teg." + it.at("label_text").get<std::string>(), file)[0];
    p.sim = torch::matmul(iel[static_cast<int64_t>(i)], teg);
    p.gt.assign(224 * 224, 0.0f);
    if (p.label == 1)
      for (const auto& b : it.at("boxes_xywh_224")) eval::add_box(p.gt, b.get<std::vector<int64_t>>(), 224, 224);
    out.push_back(std::move(p));
  }
  return out;
}

TEST(GoldenPipeline, PerItemMetricsAndCategoryMeansMatchTheAuthorsTest) {
  // The authors' Pipeline.test (MS-CXR branch, margin on) over positives: per item and threshold
  // IoU/Dice/predicted pixels and CNR, then per-category means and their macro mean.
  const auto files = golden_files("localization_pipeline", ".json");
  AFLOC_REQUIRE_CASES(files, "localization_pipeline*.json");
  for (const auto& file : files) {
    SCOPED_TRACE(file);
    const auto j = nlohmann::json::parse(read_file(file));
    const auto items = pipeline_items(j, file);
    const auto& per_item = j.at("results").at("test_per_item");
    std::map<std::string, std::vector<std::vector<double>>> ious, dices;  // category -> items x thresholds
    std::map<std::string, std::vector<double>> cnrs;
    size_t k = 0;
    double worst = 0;
    for (const auto& it : items) {
      if (it.label != 1) continue;
      const auto& want = per_item.at(k++);
      ASSERT_EQ(want.at("path"), it.path);
      const std::string& cat = it.category;
      const eval::Map hm = to_map(infer::heatmap(it.sim, 224));
      const eval::Map& gt = it.gt;
      std::vector<double> iou_row, dice_row;
      for (const auto& row : want.at("per_threshold")) {
        const double t = row.at("threshold").get<double>();
        const double iou = eval::iou(gt, hm, t), dice = eval::dice(gt, hm, t);
        worst = std::max({worst, std::abs(iou - row.at("iou").get<double>()), std::abs(dice - row.at("dice").get<double>())});
        EXPECT_EQ(eval::predicted_pixels(hm, t), row.at("pred_pixels").get<int64_t>()) << want.at("path") << " t=" << t;
        iou_row.push_back(iou);
        dice_row.push_back(dice);
      }
      const double cnr = eval::cnr(gt, hm);
      EXPECT_NEAR(cnr, want.at("cnr").get<double>(), 1e-5) << want.at("path");
      ious[cat].push_back(iou_row);
      dices[cat].push_back(dice_row);
      cnrs[cat].push_back(cnr);
    }
    EXPECT_EQ(k, per_item.size());
    std::printf("[golden] localization_pipeline: %zu items, max |IoU/Dice diff| %.3g\n", k, worst);
    EXPECT_LE(worst, 1e-6);
    const auto& macro = j.at("results").at("test_category_macro_unrounded").at("per_threshold");
    for (size_t t = 0; t < macro.size(); ++t) {
      double iou_cat = 0, dice_cat = 0, cnr_cat = 0;
      for (const auto& [cat, rows] : ious) {
        double si = 0, sd = 0;
        for (size_t r = 0; r < rows.size(); ++r) {
          si += rows[r][t];
          sd += dices[cat][r][t];
        }
        iou_cat += si / static_cast<double>(rows.size());
        dice_cat += sd / static_cast<double>(rows.size());
        cnr_cat += eval::nanmean(cnrs[cat]);
      }
      const double n = static_cast<double>(ious.size());
      EXPECT_NEAR(iou_cat / n, macro[t].at("iou_cat").get<double>(), 1e-6) << t;
      EXPECT_NEAR(dice_cat / n, macro[t].at("dice_cat").get<double>(), 1e-6) << t;
      EXPECT_NEAR(cnr_cat / n, macro[t].at("cnr_cat").get<double>(), 1e-5) << t;
    }
  }
}

TEST(GoldenPipeline, CheXlocalizeProtocolTunedThresholdsAucAndTestMatchTheAuthors) {
  // get_opt_th on all 18 items (positives and negatives), then test_use_opt_th with and without
  // only_pos: the authors' CSVs, as text.
  const auto files = golden_files("localization_pipeline", ".json");
  AFLOC_REQUIRE_CASES(files, "localization_pipeline*.json");
  for (const auto& file : files) {
    SCOPED_TRACE(file);
    const auto j = nlohmann::json::parse(read_file(file));
    // numpy arange values, bit for bit.
    for (const auto& [key, got] : {std::pair{"thresholds_opt_mask", eval::np_arange(0.2, 0.8, 0.1)},
                                   std::pair{"thresholds_opt_confidence", eval::np_arange(0.1, 0.9, 0.1)}}) {
      std::vector<double> want;
      for (const auto& v : j.at(key)) want.push_back(std::stod(v.get<std::string>()));
      EXPECT_EQ(got, want) << key;
    }
    std::vector<eval::ProtocolItem> items;
    infer::HeatmapOptions raw;
    raw.normalization = "none";  // get_hmaps output, then set_margin: NaN border, raw scale
    for (const auto& it : pipeline_items(j, file)) items.push_back({it.category, it.label, it.gt, to_map(infer::heatmap(it.sim, 224, raw))});
    const eval::OptThresholds th = eval::tune_thresholds(items);
    const auto& conf = j.at("results").at("confidence_per_item");
    ASSERT_EQ(th.confidences.size(), conf.size());
    double worst = 0;
    for (size_t i = 0; i < conf.size(); ++i) worst = std::max(worst, std::abs(th.confidences[i] - conf[i].get<double>()));
    std::printf("[golden] confidence per item max|diff| = %.3g\n", worst);
    EXPECT_LE(worst, 1e-6);
    const auto& r = j.at("results");
    EXPECT_EQ(th.mask.csv(), r.at("opt_th_only_pos.csv").get<std::string>());
    EXPECT_EQ(th.confidence.csv(), r.at("opt_th.csv").get<std::string>());
    EXPECT_EQ(th.auc.csv(), r.at("auc.csv").get<std::string>());
    EXPECT_EQ(eval::apply_thresholds(items, th, true).csv(), r.at("metric_opt_th_test_only_pos.csv").get<std::string>());
    EXPECT_EQ(eval::apply_thresholds(items, th, false).csv(), r.at("metric_opt_th_test.csv").get<std::string>());
    std::printf("[golden] opt_th_only_pos.csv\n%s[golden] opt_th.csv\n%s[golden] auc.csv\n%s", th.mask.csv().c_str(),
                th.confidence.csv().c_str(), th.auc.csv().c_str());
  }
}

TEST(GoldenDatasetUtils, BoxMappingRleAndMaskResizeMatchTheAuthors) {
  const auto files = golden_files("dataset_utils", ".json");
  AFLOC_REQUIRE_CASES(files, "dataset_utils*.json");
  for (const auto& file : files) {
    SCOPED_TRACE(file);
    const auto j = nlohmann::json::parse(read_file(file));
    const io::TensorMap c = io::load_tensor_file(file.substr(0, file.size() - 5) + ".pt");
    int n = 0;
    for (const auto& b : j.at("box_mapping")) {
      const auto got = eval::box_mapping(b.at("box_xywh").get<std::vector<double>>(), b.at("orig_w").get<int64_t>(),
                                         b.at("orig_h").get<int64_t>(), 224);
      EXPECT_EQ(got, b.at("mapped_xywh_224").get<std::vector<int64_t>>()) << b.dump();
      eval::Map m(224 * 224, 0.0f);
      eval::add_box(m, got, 224, 224);
      double sum = 0;
      for (float v : m) sum += v;
      EXPECT_EQ(static_cast<int64_t>(sum), b.at("box2mask_sum").get<int64_t>());
      ++n;
    }
    std::printf("[golden] box_mapping + box2mask: %d boxes\n", n);
    const auto& r = j.at("rle2mask");
    const data::Mask m = data::siim_decode(r.at("rle").get<std::string>(), r.at("height").get<int64_t>(),
                                           r.at("width").get<int64_t>());
    std::vector<float> px(m.pixels.begin(), m.pixels.end());
    const torch::Tensor got = torch::tensor(px).reshape({m.height, m.width});
    expect_close("rle2mask (SIIM RLE)", got, c.at("rle_mask").to(torch::kFloat), 0);
    // The mask round-trips through our encoder to the same string.
    EXPECT_EQ(data::siim_encode(m), r.at("rle").get<std::string>());
    const torch::Tensor in = c.at("mask_in_uint8");
    data::Gray8 g = data::from_tensor(in);
    const torch::Tensor resized = data::to_tensor(data::resize_mask(g, 224));
    const int64_t differ = resized.ne(c.at("mask_binary")).sum().item<int64_t>();
    std::printf("[golden] mask resize (float INTER_AREA >= 1e-5): %lld pixels differ\n", static_cast<long long>(differ));
    EXPECT_EQ(differ, 0);
  }
}

}  // namespace
}  // namespace afloc::test
