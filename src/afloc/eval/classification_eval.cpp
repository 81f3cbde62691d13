#include "afloc/eval/classification_eval.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include "afloc/common/error.h"
#include "afloc/common/strings.h"
#include "afloc/data/csv.h"
#include "afloc/eval/metrics.h"

namespace afloc::eval {
namespace {

int parse_label(const std::string& cell, const std::string& where) {
  if (cell.empty()) return -1;
  char* end = nullptr;
  const double v = std::strtod(cell.c_str(), &end);
  if (end == cell.c_str() || *end != '\0' || !(v == 1.0 || v == 0.0 || v == -1.0))
    throw Error(where + ": label '" + cell + "' is not 1, 0, -1 or blank");
  return v == 1.0 ? 1 : (v == 0.0 ? 0 : -1);
}

}  // namespace

ClassLabels read_class_labels(const std::string& path, const std::vector<std::string>& classes) {
  const data::CsvTable t = data::read_csv(path);
  size_t img = t.find_column("image");
  if (img == std::string::npos) img = t.find_column("path");
  const bool by_study = img == std::string::npos && t.find_column("study_id") != std::string::npos;
  if (by_study) img = t.column("study_id");
  if (img == std::string::npos) t.column("image");  // throws, naming the columns present
  std::vector<size_t> cols;
  std::vector<std::string> missing;
  for (const auto& c : classes) {
    size_t k = std::string::npos;
    for (size_t h = 0; h < t.header.size(); ++h)
      if (ascii_lower(t.header[h]) == ascii_lower(c)) k = h;
    if (k == std::string::npos) missing.push_back(c);
    cols.push_back(k);
  }
  const size_t label_col = t.find_column("label");
  ClassLabels out;
  out.by_study = by_study;
  if (!missing.empty() && label_col == std::string::npos) {
    std::string names;
    for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
    throw Error(path + ": no column for class(es) " + names + " and no `label` column");
  }
  for (size_t r = 0; r < t.rows.size(); ++r) {
    const std::string where = path + " row " + std::to_string(r + 2);
    out.images.push_back(by_study ? "s" + t.at(r, img) : t.at(r, img));
    std::vector<int> y(classes.size(), -1);
    if (missing.empty()) {
      for (size_t c = 0; c < classes.size(); ++c) {
        const std::string& cell = t.at(r, cols[c]);
        // The CheXpert and NegBio labelers leave a finding the report does not mention blank; it is
        // absent, as evaluations on these files commonly read it (CheXpert: "blank: unmentioned").
        y[c] = by_study && cell.empty() ? 0 : parse_label(cell, where + " column " + classes[c]);
      }
    } else {
      const std::string v = t.at(r, label_col);
      size_t hit = std::string::npos;
      for (size_t c = 0; c < classes.size(); ++c)
        if (ascii_lower(classes[c]) == ascii_lower(v)) hit = c;
      if (hit == std::string::npos) throw Error(where + ": label '" + v + "' is not one of the classes");
      for (size_t c = 0; c < classes.size(); ++c) y[c] = c == hit ? 1 : 0;
    }
    out.y.push_back(std::move(y));
  }
  return out;
}

ClassificationSummary evaluate_classification(const std::vector<std::string>& classes,
                                              const std::vector<std::vector<double>>& probabilities,
                                              const std::vector<std::vector<int>>& labels) {
  if (probabilities.size() != labels.size()) throw Error("evaluate_classification: probabilities and labels differ in length");
  ClassificationSummary s;
  std::vector<double> aucs;
  for (size_t c = 0; c < classes.size(); ++c) {
    std::vector<double> sc;
    std::vector<int> y;
    for (size_t i = 0; i < labels.size(); ++i)
      if (labels[i][c] >= 0) {
        sc.push_back(probabilities[i][c]);
        y.push_back(labels[i][c]);
      }
    ClassResult r;
    r.name = classes[c];
    for (int v : y) (v ? r.n_pos : r.n_neg)++;
    r.auroc = roc_auc(sc, y);
    aucs.push_back(r.auroc);
    s.classes.push_back(r);
  }
  s.macro_auroc = nanmean(aucs);
  std::vector<int> y_true, y_pred;
  for (size_t i = 0; i < labels.size(); ++i) {
    int pos = -1, n = 0;
    for (size_t c = 0; c < classes.size(); ++c)
      if (labels[i][c] == 1) {
        pos = static_cast<int>(c);
        ++n;
      }
    if (n != 1) continue;
    int best = 0;
    for (size_t c = 1; c < classes.size(); ++c)
      if (probabilities[i][c] > probabilities[i][static_cast<size_t>(best)]) best = static_cast<int>(c);
    y_true.push_back(pos);
    y_pred.push_back(best);
  }
  s.n_single_label = static_cast<int64_t>(y_true.size());
  int64_t correct = 0;
  for (size_t i = 0; i < y_true.size(); ++i) correct += y_true[i] == y_pred[i];
  s.accuracy = y_true.empty() ? std::numeric_limits<double>::quiet_NaN()
                              : static_cast<double>(correct) / static_cast<double>(y_true.size());
  s.balanced_accuracy = y_true.empty() ? std::numeric_limits<double>::quiet_NaN() : balanced_accuracy(y_true, y_pred);
  return s;
}

std::string classification_table(const ClassificationSummary& s, bool multiclass) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-28s %6s %6s %8s %8s\n", "class", "pos", "neg", "AUROC", "chance");
  out += line;
  for (const auto& c : s.classes) {
    std::snprintf(line, sizeof line, "%-28s %6lld %6lld %8.3f %8.3f\n", c.name.substr(0, 28).c_str(),
                  static_cast<long long>(c.n_pos), static_cast<long long>(c.n_neg), c.auroc, 0.5);
    out += line;
  }
  std::snprintf(line, sizeof line, "%-28s %6s %6s %8.3f %8.3f\n", "macro", "", "", s.macro_auroc, 0.5);
  out += line;
  if (multiclass) {
    std::snprintf(line, sizeof line, "single-label images %lld: accuracy %.3f, balanced accuracy %.3f (chance %.3f)\n",
                  static_cast<long long>(s.n_single_label), s.accuracy, s.balanced_accuracy,
                  s.classes.empty() ? 0.0 : 1.0 / static_cast<double>(s.classes.size()));
    out += line;
  }
  return out;
}

}  // namespace afloc::eval
