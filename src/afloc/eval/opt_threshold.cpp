#include "afloc/eval/opt_threshold.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include "afloc/common/error.h"

namespace afloc::eval {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// pandas DataFrame.round(3): numpy's round, i.e. rint(x * 1000) / 1000.
double round3(double x) { return std::nearbyint(x * 1000.0) / 1000.0; }

// Python's repr of a float, as pandas writes it to CSV ("" for NaN).
std::string py_repr(double v) {
  if (std::isnan(v)) return "";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

// The authors' norm_heatmap(mode=1): (x - min) / (max - min) over non-NaN pixels, in the map's
// float32, so threshold comparisons flip exactly where theirs do.
Map norm01(const Map& raw) {
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  for (float v : raw)
    if (!std::isnan(v)) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  const float range = hi - lo;
  if (!(range > 0)) return raw;  // a constant map: no pixel passes any threshold in (0, 1)
  Map out(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) out[i] = std::isnan(raw[i]) ? raw[i] : (raw[i] - lo) / range;
  return out;
}

// compute_iou(gt, heatmap > t (or nothing), nan, only_pos).
double item_iou(const Map& gt, const Map& heat, double t, bool predict, bool only_pos) {
  int64_t inter = 0, uni = 0, pred = 0, g = 0;
  for (size_t i = 0; i < gt.size(); ++i) {
    if (std::isnan(heat[i])) continue;
    const bool p = predict && heat[i] > t, q = gt[i] != 0;
    pred += p;
    g += q;
    inter += p && q;
    uni += p || q;
  }
  if (only_pos ? (pred == 0 || g == 0) : uni == 0) return kNaN;
  return static_cast<double>(inter) / static_cast<double>(uni);
}

std::vector<std::string> categories_in_order(const std::vector<ProtocolItem>& items) {
  std::vector<std::string> out;
  for (const auto& it : items)
    if (std::find(out.begin(), out.end(), it.category) == out.end()) out.push_back(it.category);
  return out;
}

// Per threshold x category mean IoU -> (threshold at numpy argmax, pandas max) per category. numpy's
// argmax returns the first NaN when a column holds one (the authors' frame.values.argmax).
CategoryTable best_per_category(const std::vector<std::string>& cats, const std::vector<double>& thresholds,
                                const std::vector<std::vector<double>>& table) {
  CategoryTable t;
  t.categories = cats;
  std::vector<double> best_t, best_v;
  for (size_t c = 0; c < cats.size(); ++c) {
    size_t arg = 0;
    bool nan_seen = false;
    double mx = -std::numeric_limits<double>::infinity();  // IoUs are >= 0: any value beats it
    for (size_t k = 0; k < thresholds.size(); ++k) {
      const double v = table[k][c];
      if (std::isnan(v)) {
        if (!nan_seen) arg = k;
        nan_seen = true;
      } else if (v > mx) {
        if (!nan_seen) arg = k;
        mx = v;
      }
    }
    best_t.push_back(thresholds[arg]);
    best_v.push_back(std::isinf(mx) ? kNaN : mx);
  }
  // The mean column (pandas mean(axis=1): NaN skipped) is taken before DataFrame.round(3), like
  // everything else in the frame.
  best_t.push_back(nanmean(best_t));
  best_v.push_back(nanmean(best_v));
  for (auto* row : {&best_t, &best_v})
    for (auto& v : *row) v = round3(v);
  t.rows = {best_t, best_v};
  return t;
}

}  // namespace

std::vector<double> np_arange(double start, double stop, double step) {
  const auto n = static_cast<int64_t>(std::ceil((stop - start) / step));
  const double delta = (start + step) - start;
  std::vector<double> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(i == 0 ? start : start + static_cast<double>(i) * delta);
  return out;
}

double confidence(const Map& raw) {
  double best = -std::numeric_limits<double>::infinity();
  for (float v : raw)
    if (!std::isnan(v)) best = std::max(best, std::clamp(static_cast<double>(v), 0.0, 2.0) / 2.0);
  return best;
}

std::string CategoryTable::csv() const {
  std::string out;
  for (const auto& c : categories) out += c + ",";
  out += "mean\n";
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) out += (i ? "," : "") + py_repr(r[i]);
    out += "\n";
  }
  return out;
}

double OptThresholds::mask_threshold(const std::string& category) const {
  for (size_t c = 0; c < mask.categories.size(); ++c)
    if (mask.categories[c] == category) return mask.rows[0][c];
  throw Error("no tuned mask threshold for category '" + category + "'");
}

double OptThresholds::confidence_threshold(const std::string& category) const {
  for (size_t c = 0; c < confidence.categories.size(); ++c)
    if (confidence.categories[c] == category) return confidence.rows[0][c];
  throw Error("no tuned confidence threshold for category '" + category + "'");
}

OptThresholds tune_thresholds(const std::vector<ProtocolItem>& val) {
  if (val.empty()) throw Error("threshold tuning: no validation items");
  const auto cats = categories_in_order(val);
  std::vector<size_t> cat_of;  // each item's column
  std::vector<Map> heat01;
  OptThresholds th;
  for (const auto& it : val) {
    cat_of.push_back(static_cast<size_t>(std::find(cats.begin(), cats.end(), it.category) - cats.begin()));
    heat01.push_back(norm01(it.raw));
    th.confidences.push_back(confidence(it.raw));
  }
  // Rows = thresholds, columns = categories: the per-category nanmean of iou(item, threshold).
  auto mean_iou_table = [&](const std::vector<double>& thresholds, const auto& iou) {
    std::vector<std::vector<double>> table;
    for (double t : thresholds) {
      std::vector<std::vector<double>> per(cats.size());
      for (size_t i = 0; i < val.size(); ++i) per[cat_of[i]].push_back(iou(i, t));
      std::vector<double> row;
      for (const auto& p : per) row.push_back(nanmean(p));
      table.push_back(row);
    }
    return table;
  };
  // 1. Mask threshold on positives (IoU undefined for items without ground truth or prediction).
  const auto mask_ts = np_arange(0.2, 0.8, 0.1);
  th.mask = best_per_category(cats, mask_ts, mean_iou_table(mask_ts, [&](size_t i, double t) {
                                return item_iou(val[i].gt, heat01[i], t, true, true);
                              }));
  // 2. Confidence threshold over all items with the tuned mask thresholds.
  const auto conf_ts = np_arange(0.1, 0.9, 0.1);
  th.confidence = best_per_category(cats, conf_ts, mean_iou_table(conf_ts, [&](size_t i, double t) {
                                      return item_iou(val[i].gt, heat01[i], th.mask.rows[0][cat_of[i]], !(th.confidences[i] < t), false);
                                    }));
  // 3. AUROC of the confidence per category (sorted, as the authors' auc.csv).
  std::vector<std::string> sorted = cats;
  std::sort(sorted.begin(), sorted.end());
  th.auc.categories = sorted;
  std::vector<double> aucs;
  for (const auto& c : sorted) {
    std::vector<double> s;
    std::vector<int> y;
    for (size_t i = 0; i < val.size(); ++i)
      if (val[i].category == c) {
        s.push_back(th.confidences[i]);
        y.push_back(val[i].label);
      }
    aucs.push_back(roc_auc(s, y));
  }
  double sum = 0;
  for (double a : aucs) sum += a;  // np.mean: NaN propagates
  aucs.push_back(sum / static_cast<double>(sorted.size()));
  for (auto& a : aucs) a = round3(a);
  th.auc.rows = {aucs};
  return th;
}

OptResult apply_thresholds(const std::vector<ProtocolItem>& items, const OptThresholds& th, bool only_pos) {
  const auto cats = categories_in_order(items);
  std::vector<std::vector<double>> per(cats.size());
  std::vector<double> all;
  for (const auto& it : items) {
    const double iou = item_iou(it.gt, norm01(it.raw), th.mask_threshold(it.category),
                                !(confidence(it.raw) < th.confidence_threshold(it.category)), only_pos);
    all.push_back(iou);
    per[static_cast<size_t>(std::find(cats.begin(), cats.end(), it.category) - cats.begin())].push_back(iou);
  }
  OptResult r;
  r.iou = nanmean(all);
  std::vector<double> means;
  for (size_t c = 0; c < cats.size(); ++c) {
    means.push_back(nanmean(per[c]));
    r.per_category.emplace_back(cats[c], means.back());
  }
  r.iou_cat = nanmean(means);
  return r;
}

std::string OptResult::csv() const {
  std::string head = "iou,iou_cat", row = py_repr(round3(iou)) + "," + py_repr(round3(iou_cat));
  for (const auto& [c, v] : per_category) {
    head += ",iou_" + c;
    row += "," + py_repr(round3(v));
  }
  return head + "\n" + row + "\n";
}

}  // namespace afloc::eval
