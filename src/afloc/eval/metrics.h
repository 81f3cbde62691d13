#pragma once
/// Localization metrics exactly as the authors compute them (localization/metrics.py, SPEC §5):
/// on the pixels where the heatmap is not NaN; IoU and Dice undefined (NaN) when the prediction or
/// the ground truth is empty (only_pos); CNR on the [-1, 1] heatmap with population variances.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace afloc::eval {

/// A heatmap or mask as a flat row-major array (NaN = outside the evaluated region).
using Map = std::vector<float>;

/// The five thresholds of the protocol, {0.1, 0.2, 0.3, 0.4, 0.5} (0.3 as 0.30000000000000004,
/// the value Python's arange produces).
const std::vector<double>& default_thresholds();

/// IoU of (heatmap > t) with gt != 0 on non-NaN pixels. only_pos: NaN when either is empty;
/// otherwise NaN only when the union is empty.
double iou(const Map& gt, const Map& heatmap, double threshold, bool only_pos = true);
/// Dice = 2 |P & G| / (|P| + sum(gt)): as in the authors' code, a summed box mask's 2s count twice
/// in the denominator.
double dice(const Map& gt, const Map& heatmap, double threshold, bool only_pos = true);
/// Predicted pixels (heatmap > t, non-NaN).
int64_t predicted_pixels(const Map& heatmap, double threshold);
/// (mean_in - mean_out) / sqrt(var_in + var_out) with in = gt == 1, out = gt == 0 (pixels where
/// gt is 2, overlapping boxes, belong to neither, as in the authors' code); 0 when the denominator
/// is 0. The heatmap is re-normalised to [-1, 1] over non-NaN pixels first.
double cnr(const Map& gt, const Map& heatmap);
/// The pointing game's arg-max: the first (row-major) largest non-NaN pixel; -1 when all are NaN.
int64_t peak_index(const Map& heatmap);
/// Pointing game: the arg-max (peak_index) lies inside gt.
bool hit(const Map& gt, const Map& heatmap);
/// How far a pointing-game miss falls: the Euclidean distance in pixels from pixel `peak` (a
/// heatmap's peak_index) to the nearest gt != 0 pixel of a row-major map `width` pixels wide; 0 for
/// a hit, NaN when gt is empty or peak < 0. Not one of the authors' metrics (a diagnostic).
double peak_distance(const Map& gt, int64_t peak, int64_t width);

/// The authors' box_mapping: a box (x, y, w, h) in an image of width x height pixels moved into the
/// square `scale` geometry of resize_pad (scaled by the long side, shifted by the floor pad), each
/// coordinate floored.
std::vector<int64_t> box_mapping(const std::vector<double>& xywh, int64_t width, int64_t height, int64_t scale);
/// The authors' box2mask, added onto `mask` (so overlapping boxes count 2): (height, width) row-major.
void add_box(Map& mask, const std::vector<int64_t>& xywh, int64_t width, int64_t height);

/// Mean of the non-NaN values (NaN when none).
double nanmean(const std::vector<double>& v);

/// Area under the ROC curve of scores for binary labels (0/1), as sklearn's roc_auc_score: the
/// Mann-Whitney statistic with tied scores counted one half. NaN when only one class is present.
double roc_auc(const std::vector<double>& scores, const std::vector<int>& labels);
/// Balanced accuracy as sklearn's balanced_accuracy_score: the mean recall over the classes that
/// occur in y_true. NaN for empty input.
double balanced_accuracy(const std::vector<int>& y_true, const std::vector<int>& y_pred);

/// A confidence interval (NaN bounds when it cannot be computed).
struct Interval {
  double lower, upper;
};

/// Bootstrap resamples as the authors' `bootci` draws them (localization/common.py): `replicates`
/// index lists, each `n` draws with replacement from 0..n-1 over all cases of all categories
/// together. Seeded std::mt19937_64 reduced modulo n, so a seed gives the same intervals with every
/// compiler and standard library (numpy's generator cannot be reproduced, so the values differ
/// from theirs within the bootstrap's noise).
std::vector<std::vector<int64_t>> bootstrap_samples(int64_t n, int64_t replicates, uint64_t seed = 0);
/// Per-category means of `values` over one resample (`category[i]` in 0..n_categories-1; NaN values
/// left out, as pandas' mean does; NaN for a category the resample missed), and their macro mean
/// over the categories that have one.
std::pair<std::vector<double>, double> resample_means(const std::vector<int64_t>& category, const std::vector<double>& values,
                                                      int64_t n_categories, const std::vector<int64_t>& sample);
/// The authors' percentile interval of replicate statistics (`compute_cis` at confidence level
/// 0.05): sorted, lower = [int(0.025 R) - 1], upper = [int(0.975 R) - 1], R the number of finite
/// replicates (NaN ones dropped). NaN bounds when R < 40 (the lower index would be below 0).
Interval percentile_interval(std::vector<double> replicate_values);

/// Accumulates per-category localization results (MONAI-style update/aggregate/reset).
class LocalizationMetric {
 public:
  struct Summary {
    int64_t n = 0;
    double iou = 0, dice = 0, cnr = 0, hit_rate = 0;  ///< means over cases (NaN-excluding)
  };
  /// One case's metrics: IoU and Dice averaged over the default thresholds (NaN-excluding), CNR, hit.
  struct CaseMetrics {
    double iou, dice, cnr;
    bool hit;
  };
  /// Adds a case and returns its metrics.
  CaseMetrics update(const std::string& category, const Map& gt, const Map& heatmap);
  /// Per category, sorted by name.
  std::vector<std::pair<std::string, Summary>> aggregate() const;
  /// Macro mean over categories.
  Summary macro() const;
  void reset() { cases_.clear(); }

 private:
  struct Case {
    std::string category;
    CaseMetrics m;
  };
  std::vector<Case> cases_;
};

}  // namespace afloc::eval
