#include "afloc/eval/metrics.h"

#include "afloc/common/error.h"
#include "afloc/common/seed.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <stdexcept>

namespace afloc::eval {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void check(const Map& a, const Map& b) {
  if (a.size() != b.size()) throw std::invalid_argument("metrics: ground truth and heatmap sizes differ");
}

struct Counts {
  int64_t inter = 0, uni = 0, pred = 0, gt = 0;
  double gt_sum = 0;  // sum of the mask's values: overlapping boxes (value 2) count twice
};

Counts counts(const Map& gt, const Map& h, double t) {
  check(gt, h);
  Counts c;
  for (size_t i = 0; i < h.size(); ++i) {
    if (std::isnan(h[i])) continue;
    const bool p = static_cast<double>(h[i]) > t, g = gt[i] != 0;
    c.inter += p && g;
    c.uni += p || g;
    c.pred += p;
    c.gt += g;
    c.gt_sum += gt[i];
  }
  return c;
}

}  // namespace

const std::vector<double>& default_thresholds() {
  static const std::vector<double> t = {0.1, 0.2, 0.30000000000000004, 0.4, 0.5};
  return t;
}

double iou(const Map& gt, const Map& heatmap, double threshold, bool only_pos) {
  const Counts c = counts(gt, heatmap, threshold);
  if (only_pos ? (c.pred == 0 || c.gt == 0) : c.uni == 0) return kNaN;
  return static_cast<double>(c.inter) / static_cast<double>(c.uni);
}

double dice(const Map& gt, const Map& heatmap, double threshold, bool only_pos) {
  const Counts c = counts(gt, heatmap, threshold);
  if (only_pos ? (c.pred == 0 || c.gt == 0) : c.uni == 0) return kNaN;
  // The authors divide by np.sum(premask) + np.sum(gtmask) on the summed box mask, so pixels covered
  // by two boxes count twice in the denominator (but once in the intersection).
  return 2.0 * static_cast<double>(c.inter) / (static_cast<double>(c.pred) + c.gt_sum);
}

int64_t predicted_pixels(const Map& heatmap, double threshold) {
  int64_t n = 0;
  for (float v : heatmap) n += !std::isnan(v) && static_cast<double>(v) > threshold;
  return n;
}

double cnr(const Map& gt, const Map& heatmap) {
  check(gt, heatmap);
  // Re-normalise to [-1, 1] over non-NaN pixels (norm_heatmap mode 0), in float as numpy does for
  // a float32 map.
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  for (float v : heatmap)
    if (!std::isnan(v)) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  const bool flat = !(hi > lo);
  double sin = 0, sout = 0;
  int64_t nin = 0, nout = 0;
  std::vector<double> in, out;
  for (size_t i = 0; i < heatmap.size(); ++i) {
    if (std::isnan(heatmap[i])) continue;
    const float v = flat ? heatmap[i] : (heatmap[i] - lo) / (hi - lo) * 2.0f - 1.0f;
    if (gt[i] == 1) in.push_back(v);
    else if (gt[i] == 0) out.push_back(v);
  }
  for (double v : in) sin += v;
  for (double v : out) sout += v;
  nin = static_cast<int64_t>(in.size());
  nout = static_cast<int64_t>(out.size());
  const double min_ = nin ? sin / static_cast<double>(nin) : kNaN, mout = nout ? sout / static_cast<double>(nout) : kNaN;
  double vin = 0, vout = 0;
  for (double v : in) vin += (v - min_) * (v - min_);
  for (double v : out) vout += (v - mout) * (v - mout);
  vin = nin ? vin / static_cast<double>(nin) : kNaN;
  vout = nout ? vout / static_cast<double>(nout) : kNaN;
  if (vin + vout == 0) return 0.0;
  return (min_ - mout) / std::sqrt(vin + vout);
}

int64_t peak_index(const Map& heatmap) {
  size_t best = heatmap.size();
  for (size_t i = 0; i < heatmap.size(); ++i) {
    if (std::isnan(heatmap[i])) continue;
    if (best == heatmap.size() || heatmap[i] > heatmap[best]) best = i;
  }
  return best == heatmap.size() ? -1 : static_cast<int64_t>(best);
}

bool hit(const Map& gt, const Map& heatmap) {
  check(gt, heatmap);
  const int64_t best = peak_index(heatmap);
  return best >= 0 && gt[static_cast<size_t>(best)] != 0;
}

double peak_distance(const Map& gt, int64_t peak, int64_t width) {
  if (width <= 0 || gt.size() % static_cast<size_t>(width) != 0) throw std::invalid_argument("peak_distance: width");
  if (peak >= static_cast<int64_t>(gt.size())) throw std::invalid_argument("peak_distance: peak outside the map");
  if (peak < 0) return std::nan("");
  const auto best = static_cast<size_t>(peak);
  const auto w = static_cast<size_t>(width);
  const auto by = static_cast<double>(best / w), bx = static_cast<double>(best % w);
  double d2 = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < gt.size(); ++i) {
    if (gt[i] == 0) continue;
    const double dy = static_cast<double>(i / w) - by, dx = static_cast<double>(i % w) - bx;
    d2 = std::min(d2, dy * dy + dx * dx);
  }
  return std::isinf(d2) ? std::nan("") : std::sqrt(d2);
}

std::vector<int64_t> box_mapping(const std::vector<double>& b, int64_t width, int64_t height, int64_t scale) {
  if (b.size() != 4) throw std::invalid_argument("box_mapping: expected x, y, w, h");
  const bool tall = height >= width;
  const double f = static_cast<double>(scale) / static_cast<double>(tall ? height : width);
  const auto short_side = static_cast<int64_t>(static_cast<double>(tall ? width : height) * f);
  const int64_t before = (scale - short_side) / 2;  // floor of a non-negative half
  const double left = tall ? static_cast<double>(before) : 0.0, top = tall ? 0.0 : static_cast<double>(before);
  return {static_cast<int64_t>(std::floor(b[0] * f + left)), static_cast<int64_t>(std::floor(b[1] * f + top)),
          static_cast<int64_t>(std::floor(b[2] * f)), static_cast<int64_t>(std::floor(b[3] * f))};
}

void add_box(Map& mask, const std::vector<int64_t>& b, int64_t width, int64_t height) {
  if (mask.size() != static_cast<size_t>(width * height)) throw std::invalid_argument("add_box: mask size");
  // numpy slicing clamps to the array: mask[y:y+h, x:x+w].
  const int64_t y0 = std::clamp<int64_t>(b[1], 0, height), y1 = std::clamp<int64_t>(b[1] + b[3], 0, height);
  const int64_t x0 = std::clamp<int64_t>(b[0], 0, width), x1 = std::clamp<int64_t>(b[0] + b[2], 0, width);
  for (int64_t y = y0; y < y1; ++y)
    for (int64_t x = x0; x < x1; ++x) mask[static_cast<size_t>(y * width + x)] += 1.0f;
}

double nanmean(const std::vector<double>& v) {
  double s = 0;
  int64_t n = 0;
  for (double x : v)
    if (!std::isnan(x)) {
      s += x;
      ++n;
    }
  return n ? s / static_cast<double>(n) : kNaN;
}

LocalizationMetric::CaseMetrics LocalizationMetric::update(const std::string& category, const Map& gt, const Map& heatmap) {
  std::vector<double> ious, dices;
  for (double t : default_thresholds()) {
    ious.push_back(iou(gt, heatmap, t));
    dices.push_back(dice(gt, heatmap, t));
  }
  const CaseMetrics m{nanmean(ious), nanmean(dices), cnr(gt, heatmap), hit(gt, heatmap)};
  cases_.push_back({category, m});
  return m;
}

std::vector<std::pair<std::string, LocalizationMetric::Summary>> LocalizationMetric::aggregate() const {
  std::map<std::string, std::vector<const Case*>> by;
  for (const auto& c : cases_) by[c.category].push_back(&c);
  std::vector<std::pair<std::string, Summary>> out;
  for (const auto& [cat, cs] : by) {
    std::vector<double> i, d, c, h;
    for (const Case* k : cs) {
      i.push_back(k->m.iou);
      d.push_back(k->m.dice);
      c.push_back(k->m.cnr);
      h.push_back(k->m.hit ? 1.0 : 0.0);
    }
    out.push_back({cat, {static_cast<int64_t>(cs.size()), nanmean(i), nanmean(d), nanmean(c), nanmean(h)}});
  }
  return out;
}

LocalizationMetric::Summary LocalizationMetric::macro() const {
  std::vector<double> i, d, c, h;
  int64_t n = 0;
  for (const auto& [cat, s] : aggregate()) {
    i.push_back(s.iou);
    d.push_back(s.dice);
    c.push_back(s.cnr);
    h.push_back(s.hit_rate);
    n += s.n;
  }
  return {n, nanmean(i), nanmean(d), nanmean(c), nanmean(h)};
}

double roc_auc(const std::vector<double>& scores, const std::vector<int>& labels) {
  if (scores.size() != labels.size()) throw afloc::Error("roc_auc: " + std::to_string(scores.size()) + " scores but " +
                                                  std::to_string(labels.size()) + " labels");
  std::vector<size_t> order(scores.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // Mid-ranks over ties; AUC = (sum of positive ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg).
  double rank_sum = 0;
  int64_t n_pos = 0;
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j < order.size() && scores[order[j]] == scores[order[i]]) ++j;
    const double mid = (static_cast<double>(i) + static_cast<double>(j) + 1.0) / 2.0;
    for (size_t k = i; k < j; ++k)
      if (labels[order[k]] != 0) {
        rank_sum += mid;
        ++n_pos;
      }
    i = j;
  }
  const auto n_neg = static_cast<int64_t>(order.size()) - n_pos;
  if (n_pos == 0 || n_neg == 0) return std::numeric_limits<double>::quiet_NaN();
  const double np = static_cast<double>(n_pos);
  return (rank_sum - np * (np + 1) / 2) / (np * static_cast<double>(n_neg));
}

double balanced_accuracy(const std::vector<int>& y_true, const std::vector<int>& y_pred) {
  if (y_true.size() != y_pred.size()) throw afloc::Error("balanced_accuracy: label and prediction counts differ");
  std::map<int, std::pair<int64_t, int64_t>> per;  // class -> (correct, total)
  for (size_t i = 0; i < y_true.size(); ++i) {
    auto& [correct, total] = per[y_true[i]];
    ++total;
    if (y_pred[i] == y_true[i]) ++correct;
  }
  std::vector<double> recall;
  for (const auto& [c, ct] : per) recall.push_back(static_cast<double>(ct.first) / static_cast<double>(ct.second));
  return nanmean(recall);
}

std::vector<std::vector<int64_t>> bootstrap_samples(int64_t n, int64_t replicates, uint64_t seed) {
  if (n < 0 || replicates < 0) throw std::invalid_argument("bootstrap_samples: negative size");
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(replicates));
  if (n == 0) return out;
  // mt19937_64's stream is fixed by the standard; index_below keeps the draws the same everywhere.
  const auto m = static_cast<uint64_t>(n);
  for (auto& s : out) {
    s.resize(static_cast<size_t>(n));
    for (auto& i : s) i = static_cast<int64_t>(index_below(rng(), m));
  }
  return out;
}

std::pair<std::vector<double>, double> resample_means(const std::vector<int64_t>& category, const std::vector<double>& values,
                                                      int64_t n_categories, const std::vector<int64_t>& sample) {
  if (category.size() != values.size()) throw std::invalid_argument("resample_means: categories and values differ in length");
  std::vector<double> sum(static_cast<size_t>(n_categories), 0.0);
  std::vector<int64_t> count(static_cast<size_t>(n_categories), 0);
  for (const int64_t i : sample) {
    const auto k = static_cast<size_t>(i);
    if (k >= values.size()) throw std::invalid_argument("resample_means: case index out of range");
    const int64_t c = category[k];
    if (c < 0 || c >= n_categories) throw std::invalid_argument("resample_means: category out of range");
    if (std::isnan(values[k])) continue;
    sum[static_cast<size_t>(c)] += values[k];
    ++count[static_cast<size_t>(c)];
  }
  std::vector<double> means(static_cast<size_t>(n_categories), kNaN);
  for (size_t c = 0; c < means.size(); ++c)
    if (count[c] > 0) means[c] = sum[c] / static_cast<double>(count[c]);
  return {means, nanmean(means)};
}

Interval percentile_interval(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); }), v.end());
  const auto r = static_cast<double>(v.size());
  // compute_cis(confidence_level=0.05): int(level / 2 * R) - 1 and int((1 - level / 2) * R) - 1
  const auto lo = static_cast<int64_t>(0.05 / 2 * r) - 1, hi = static_cast<int64_t>((1 - 0.05 / 2) * r) - 1;
  if (lo < 0) return {kNaN, kNaN};
  std::sort(v.begin(), v.end());
  return {v[static_cast<size_t>(lo)], v[static_cast<size_t>(hi)]};
}

}  // namespace afloc::eval
