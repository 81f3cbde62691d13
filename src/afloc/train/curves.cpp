#include "afloc/train/curves.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "afloc/common/error.h"
#include "afloc/data/image_file.h"

namespace afloc::train {
namespace {

// Drawn with OpenCV, already a dependency for images: a line chart needs no plotting library
// (Debian's are Python- or gnuplot-based, or a large C library for two panels of lines).

const char* const kTerms[] = {"sentence", "shallow_sentence", "report", "word"};

// Tab10-like colours, BGR.
const cv::Scalar kColours[] = {{180, 119, 31}, {14, 127, 255}, {44, 160, 44}, {40, 39, 214},
                               {189, 103, 148}, {75, 86, 140}, {194, 119, 227}, {127, 127, 127}};

cv::Scalar colour(size_t i) { return kColours[i % (sizeof kColours / sizeof kColours[0])]; }

// "Nice" tick spacing (1, 2 or 5 x 10^k) for about `n` ticks over [lo, hi].
double tick_step(double lo, double hi, int n) {
  const double raw = (hi - lo) / std::max(1, n);
  if (!(raw > 0)) return 1;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

std::string tick_label(double v, double step) {
  if (std::abs(v) < step * 1e-6) v = 0;  // not "-0.0000" for a tick that sums to about zero
  char buf[32];
  if (step >= 1) std::snprintf(buf, sizeof buf, "%.0f", v);
  else if (std::abs(v) > 0 && (std::abs(v) < 1e-3 || step < 1e-4)) std::snprintf(buf, sizeof buf, "%.0e", v);
  else std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(std::ceil(-std::log10(step))), v);
  return buf;
}

struct Series {
  std::string label;
  const std::vector<double>* x;
  const std::vector<double>* y;
  cv::Scalar colour;
  bool dots = false;
};

void text(cv::Mat& img, const std::string& s, cv::Point at, double scale = 0.4, cv::Scalar c = {40, 40, 40}) {
  cv::putText(img, s, at, cv::FONT_HERSHEY_SIMPLEX, scale, c, 1, cv::LINE_AA);
}

// One panel in `area`: axes, ticks, grid, the series, a legend at the top right.
void panel(cv::Mat& img, cv::Rect area, const std::string& title, const std::string& xlabel, const std::vector<Series>& series) {
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x->size() && i < s.y->size(); ++i) {
      if (!std::isfinite((*s.y)[i])) continue;
      x0 = std::min(x0, (*s.x)[i]), x1 = std::max(x1, (*s.x)[i]);
      y0 = std::min(y0, (*s.y)[i]), y1 = std::max(y1, (*s.y)[i]);
    }
  text(img, title, {area.x + 50, area.y + 16}, 0.5);
  if (!std::isfinite(x0)) {
    text(img, "(nothing logged)", {area.x + 60, area.y + area.height / 2});
    return;
  }
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + std::max(1e-12, std::abs(y0) * 0.1);
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad, y1 += pad;
  const cv::Rect plot(area.x + 56, area.y + 26, area.width - 70, area.height - 62);
  auto px = [&](double x) { return plot.x + static_cast<int>(std::lround((x - x0) / (x1 - x0) * plot.width)); };
  auto py = [&](double y) { return plot.y + plot.height - static_cast<int>(std::lround((y - y0) / (y1 - y0) * plot.height)); };
  const double xs = tick_step(x0, x1, 6), ys = tick_step(y0, y1, 6);
  for (double v = std::ceil(x0 / xs) * xs; v <= x1 + 1e-9 * xs; v += xs) {
    cv::line(img, {px(v), plot.y}, {px(v), plot.y + plot.height}, {232, 232, 232}, 1);
    const std::string l = tick_label(v, xs);
    text(img, l, {px(v) - 4 * static_cast<int>(l.size()), plot.y + plot.height + 16}, 0.35);
  }
  for (double v = std::ceil(y0 / ys) * ys; v <= y1 + 1e-9 * ys; v += ys) {
    cv::line(img, {plot.x, py(v)}, {plot.x + plot.width, py(v)}, {232, 232, 232}, 1);
    const std::string l = tick_label(v, ys);
    text(img, l, {plot.x - 8 - 7 * static_cast<int>(l.size()), py(v) + 4}, 0.35);
  }
  cv::rectangle(img, plot, {90, 90, 90}, 1);
  text(img, xlabel, {plot.x + plot.width / 2 - 12, plot.y + plot.height + 32}, 0.4);
  for (const auto& s : series) {
    cv::Point prev(-1, -1);
    for (size_t i = 0; i < s.x->size() && i < s.y->size(); ++i) {
      if (!std::isfinite((*s.y)[i])) {
        prev = {-1, -1};
        continue;
      }
      const cv::Point p(px((*s.x)[i]), py((*s.y)[i]));
      if (s.dots) cv::circle(img, p, 3, s.colour, cv::FILLED, cv::LINE_AA);
      if (prev.x >= 0) cv::line(img, prev, p, s.colour, s.dots ? 1 : 2, cv::LINE_AA);
      prev = p;
    }
  }
  int ly = plot.y + 14;
  for (const auto& s : series) {
    if (s.label.empty()) continue;
    const int lx = plot.x + plot.width - 10 - 7 * static_cast<int>(s.label.size()) - 22;
    if (s.dots) cv::circle(img, {lx + 8, ly - 4}, 3, s.colour, cv::FILLED, cv::LINE_AA);
    else cv::line(img, {lx, ly - 4}, {lx + 16, ly - 4}, s.colour, 2, cv::LINE_AA);
    text(img, s.label, {lx + 22, ly}, 0.38);
    ly += 15;
  }
}

}  // namespace

std::string run_name(const std::string& run_dir) {
  const std::filesystem::path dir = std::filesystem::path(run_dir).lexically_normal();
  const std::string name = (dir.filename().empty() ? dir.parent_path() : dir).filename().string();
  return name.empty() ? run_dir : name;
}

RunCurves read_curves(const std::string& metrics_jsonl, const std::string& name) {
  std::istringstream in(read_file(metrics_jsonl));
  RunCurves r;
  r.name = name;
  std::vector<std::vector<double>> terms(std::size(kTerms));
  std::vector<bool> seen(std::size(kTerms), false);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception&) {
      ++r.bad_lines;
      continue;
    }
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number()) {
      ++r.bad_lines;
      continue;
    }
    const double step = j["step"].get<double>();
    auto num = [&](const char* k) {
      return j.contains(k) && j[k].is_number() ? j[k].get<double>() : std::numeric_limits<double>::quiet_NaN();
    };
    if (j.contains("val_loss")) {
      r.val_step.push_back(step);
      r.val_loss.push_back(num("val_loss"));
    }
    if (!j.contains("loss")) continue;
    r.step.push_back(step);
    r.loss.push_back(num("loss"));
    r.lr.push_back(num("lr"));
    for (size_t t = 0; t < std::size(kTerms); ++t) {
      terms[t].push_back(num(kTerms[t]));
      if (j.contains(kTerms[t]) && j[kTerms[t]].is_number() && j[kTerms[t]].get<double>() != 0) seen[t] = true;
    }
  }
  for (size_t t = 0; t < std::size(kTerms); ++t) {
    if (!seen[t]) continue;  // a term the run does not use (logged as 0) or an older log without it
    r.term_names.push_back(kTerms[t]);
    r.terms.push_back(std::move(terms[t]));
  }
  return r;
}

void plot_curves(const std::vector<RunCurves>& runs, const std::string& png_path) {
  if (runs.empty()) throw Error(png_path + ": no run to draw");
  const int w = 1100, h = 420;
  cv::Mat img(h, w, CV_8UC3, cv::Scalar(255, 255, 255));
  std::vector<Series> left, right;
  const bool one = runs.size() == 1;
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto& r = runs[i];
    left.push_back({one ? "training loss" : r.name, &r.step, &r.loss, colour(i), false});
    if (!r.val_loss.empty()) left.push_back({one ? "validation loss" : "", &r.val_step, &r.val_loss, one ? colour(1) : colour(i), true});
    if (!one) right.push_back({r.name, &r.step, &r.lr, colour(i), false});
  }
  if (one)
    for (size_t t = 0; t < runs[0].terms.size(); ++t)
      right.push_back({runs[0].term_names[t], &runs[0].step, &runs[0].terms[t], colour(t + 2), false});
  panel(img, {0, 0, w / 2, h}, one ? "loss: " + runs[0].name + " (dots: validation, each epoch)" : "loss (dots: validation)",
        "step", left);
  panel(img, {w / 2, 0, w / 2, h}, one ? "loss terms (running mean)" : "learning rate", "step", right);
  data::write_image_file(png_path, img);
}

}  // namespace afloc::train
