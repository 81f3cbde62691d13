#pragma once
/// Image-report pair lists for pretraining: the MIMIC-CXR-JPG layout and a generic manifest (CSV or
/// JSONL). Bad rows are skipped, counted by reason and reported, never fatal.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace afloc::data {

/// One image-report pair.
struct Sample {
  std::string id;      ///< dicom_id or the manifest's id (or image path)
  std::string image;   ///< absolute or working-directory-relative path
  std::string report;  ///< report text used for training (FINDINGS + IMPRESSION for MIMIC)
  std::string split;   ///< train, validate, test, ...
  /// The study's report labels as one key ("" = none known): the label CSV's cells joined (MIMIC,
  /// MimicOptions::labels_csv) or the manifest's `labels` field. Equal keys say the same.
  std::string labels;
};

/// Skipped rows, by reason ("missing image", "empty report", ...), with a few examples each.
struct SkipLog {
  std::map<std::string, int64_t> counts;
  std::map<std::string, std::vector<std::string>> examples;  ///< up to 3 per reason
  void add(const std::string& reason, const std::string& example);
  /// Adds another log's counts and examples (still at most 3 examples per reason).
  void merge(const SkipLog& other);
  int64_t total() const;
  /// "12 skipped: 10 missing image (e.g. files/...), 2 empty report (e.g. ...)" or "none skipped".
  std::string summary() const;
};

struct PairList {
  std::vector<Sample> samples;
  SkipLog skipped;
};

/// The FINDINGS and IMPRESSION sections of a MIMIC-CXR report, joined by a space. Section headers
/// are upper-case words followed by ':' at the start of a line ("FINDINGS:", "IMPRESSION:",
/// "INDICATION:", ...), named as the dataset's own section parser (MIT-LCP/mimic-cxr) names them:
/// CONCLUSION, FINDINGS AND IMPRESSION and misspellings are the impression, a header describing the
/// study ("PA AND LATERAL VIEWS OF THE CHEST:") the findings. Empty when the report has neither;
/// or, with last_paragraph, what that parser calls its last paragraph: the text after the first
/// blank line (following text) of the report's last section, as in "COMPARISON: None.\n \n The
/// lungs are clear.\n" (empty when there is no such line).
std::string report_sections(const std::string& report, bool last_paragraph = false);

/// One int64 key per sample for loop.drop_same_labels: equal for samples with the same non-empty
/// Sample::labels (a 63-bit FNV-1a hash, the same in every process), and -1 - i, unique, for a
/// sample i without labels.
std::vector<int64_t> label_keys(const std::vector<Sample>& samples);

struct MimicOptions {
  std::string root;                              ///< holds files/ and the mimic-cxr-2.0.0-*.csv(.gz)
  std::string reports_root;                      ///< holds files/p../p../s...txt ("" = root)
  std::vector<std::string> splits = {"train"};   ///< split.csv values to keep
  std::vector<std::string> views = {"PA", "AP"}; ///< ViewPosition values kept (frontal); empty = all
  bool check_images = true;                      ///< skip rows whose image file is missing
  bool read_reports = true;  ///< false: images only (reports empty, not read; MIMIC-CXR-JPG ships none)
  bool last_paragraph = false;  ///< a report with neither section trains on its last paragraph (report_sections)
  /// A study_id-keyed label CSV (mimic-cxr-2.0.0-chexpert.csv, -negbio.csv; .gz too) giving
  /// Sample::labels: the names of the columns marked 1 and, as "?name", -1; 0 and blank are both
  /// absent ("Cardiomegaly;Pleural Effusion;", "No Finding;", "-" for none; "" = not read). Studies
  /// it lacks get no labels.
  std::string labels_csv;
  int io_threads = 16;    ///< parallel file checks and report reads (I/O bound; 1 = serial)
  bool progress = false;  ///< a progress bar over the studies read
};

/// The path of MIMIC-CXR-JPG's `name`.csv or `name`.csv.gz under root (the first that exists), or ""
/// when neither does; name is e.g. "mimic-cxr-2.0.0-chexpert".
std::string mimic_csv_path(const std::string& root, const std::string& name);

/// Reads MIMIC-CXR-JPG: metadata + split CSVs (".csv" or ".csv.gz"), images
/// files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg and reports files/p../p{subject}/s{study}.txt.
/// Error for a missing CSV or column; per-row problems are skips.
PairList read_mimic(const MimicOptions& options);

struct ManifestOptions {
  std::string path;                             ///< .csv or .jsonl
  std::string root;                             ///< relative image paths resolve here ("" = the manifest's folder)
  std::vector<std::string> splits = {"train"};  ///< kept splits; rows without a split count as "train"
  bool check_images = true;
  int io_threads = 16;    ///< parallel image checks (I/O bound; 1 = serial)
  bool progress = false;  ///< a progress bar over the images checked
};

/// A generic manifest: CSV with columns image (or path), report (or text), optional split, id and
/// labels (Sample::labels); or JSONL with the same keys. Error for a missing file or column; bad rows (no image, empty report,
/// invalid JSON line, not UTF-8) are skips.
PairList read_manifest(const ManifestOptions& options);

}  // namespace afloc::data
