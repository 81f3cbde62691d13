#pragma once
/// The CheXlocalize protocol as the authors run it (localization/common.py Pipeline.get_opt_th and
/// test_use_opt_th, SPEC §5): on a validation split, per category, the mask threshold that
/// maximises the mean IoU over positives (heatmap min-max to [0, 1], thresholds 0.2..0.8), then
/// the confidence threshold (confidence = max(clip(raw map, 0, 2)) / 2) that maximises the mean IoU
/// over all items, positives and negatives (0.1..0.8); the confidence's AUROC per category; then
/// both thresholds applied to a test split. Thresholds are rounded to 3 decimals as the authors'
/// CSV round trip does; tables are written as their CSVs are.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "afloc/eval/metrics.h"

namespace afloc::eval {

/// One (image, category) item: the raw upsampled similarity map (not normalised; NaN where the
/// margin is) and the ground-truth mask (empty for a negative, label 0).
struct ProtocolItem {
  std::string category;
  int label = 0;
  Map gt, raw;
};

/// numpy.arange(start, stop, step) for floats, value by value as numpy computes them
/// (start + i * ((start + step) - start)).
std::vector<double> np_arange(double start, double stop, double step);

/// max(clip(raw[non-NaN], 0, 2) / 2).
double confidence(const Map& raw);

/// A per-category table with the authors' rows (e.g. threshold, best mean IoU), categories in
/// first-appearance order, plus a "mean" column.
struct CategoryTable {
  std::vector<std::string> categories;
  std::vector<std::vector<double>> rows;  ///< [row][category], then the row mean last
  /// pandas to_csv of the rounded frame: header line, one line per row.
  std::string csv() const;
};

struct OptThresholds {
  CategoryTable mask;        ///< opt_th_only_pos.csv: mask threshold, its mean IoU over positives
  CategoryTable confidence;  ///< opt_th.csv: confidence threshold, its mean IoU over all items
  CategoryTable auc;         ///< auc.csv: AUROC of the confidence for label per category
  std::vector<double> confidences;  ///< per item, in order
  double mask_threshold(const std::string& category) const;
  double confidence_threshold(const std::string& category) const;
};

/// Tunes both thresholds on validation items (get_opt_th).
OptThresholds tune_thresholds(const std::vector<ProtocolItem>& val);

struct OptResult {
  double iou = 0;      ///< nanmean over items
  double iou_cat = 0;  ///< mean of the per-category means
  std::vector<std::pair<std::string, double>> per_category;
  /// metric_opt_th_<split>[_only_pos].csv as the authors write it.
  std::string csv() const;
};

/// Applies tuned thresholds (test_use_opt_th): an item whose confidence is below its category's
/// confidence threshold predicts an empty mask. only_pos: IoU undefined when prediction or ground
/// truth is empty; otherwise undefined only when both are.
OptResult apply_thresholds(const std::vector<ProtocolItem>& items, const OptThresholds& th, bool only_pos);

}  // namespace afloc::eval
