#pragma once
/// Zero-shot diagnosis metrics (SPEC §5): AUROC per class (binary, multi-label) and balanced
/// accuracy (multi-class), from probabilities and a labels table.
#include <cstdint>
#include <string>
#include <vector>

namespace afloc::eval {

/// Labels per image and class: 1 present, 0 absent, -1 unknown (excluded from that class's AUROC;
/// CheXpert's uncertain -1 and blank cells).
struct ClassLabels {
  std::vector<std::string> images;  ///< as written in the file's image/path column; "s{study_id}" when by_study
  std::vector<std::vector<int>> y;  ///< [image][class]
  /// Rows name MIMIC-CXR studies, not images: an image is matched by the folder that holds it
  /// (files/p../p{subject}/s{study}/{dicom_id}.jpg), and all images of a study share its labels.
  bool by_study = false;
};

/// Reads a labels CSV: an `image` (or `path`) column and either one column per class (matched
/// case-insensitively; 1/1.0 present, 0/0.0 absent, -1/blank unknown) or, for single-label sets, a
/// `label` column holding a class name. Without an image column, a `study_id` column makes the rows
/// studies (MIMIC-CXR-JPG's mimic-cxr-2.0.0-chexpert.csv and -negbio.csv, .gz too; by_study), whose
/// blank cells (findings the labeler found unmentioned) are absent, their -1 (uncertain) unknown.
/// Error naming the file and the missing classes or bad cell.
ClassLabels read_class_labels(const std::string& path, const std::vector<std::string>& classes);

struct ClassResult {
  std::string name;
  int64_t n_pos = 0, n_neg = 0;
  double auroc = 0;  ///< NaN when a side is empty
};

struct ClassificationSummary {
  std::vector<ClassResult> classes;
  double macro_auroc = 0;        ///< mean over classes with a defined AUROC
  int64_t n_single_label = 0;    ///< images with exactly one known positive class (multi-class metrics)
  double accuracy = 0;           ///< arg-max accuracy over those images (NaN when none)
  double balanced_accuracy = 0;  ///< sklearn's balanced_accuracy_score over those images
};

/// probabilities[i][c] for image i and class c, labels aligned with them.
ClassificationSummary evaluate_classification(const std::vector<std::string>& classes,
                                              const std::vector<std::vector<double>>& probabilities,
                                              const std::vector<std::vector<int>>& labels);

/// A human-readable table of the summary, chance (AUROC 0.5, accuracy 1/C) beside.
std::string classification_table(const ClassificationSummary& s, bool multiclass);

}  // namespace afloc::eval
