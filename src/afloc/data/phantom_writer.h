#pragma once
/// Writes a phantom world to disk in the public datasets' layouts: MIMIC-CXR-JPG for pretraining
/// (images, reports, metadata/split/chexpert CSVs) and the test split's ground truth as MS-CXR,
/// RSNA, CheXlocalize and SIIM-ACR files, plus a COVID-Rural-style set of an unseen finding.
#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace afloc::data::phantom {

struct SynthOptions {
  std::string out;          ///< output directory (created)
  int64_t n_train = 2000;   ///< pretraining studies (split "train")
  int64_t n_val = -1;       ///< split "validate"; -1 = 5% of n_train (at least 1)
  int64_t n_test = 200;     ///< split "test", with ground truth
  int64_t n_unseen = 0;     ///< COVID-Rural-style images of the unseen finding (0 = none)
  int64_t size = 224;       ///< image side
  uint64_t seed = 0;
  int threads = 0;          ///< 0 = all cores
  int jpeg_quality = 95;
  bool progress = true;
};

struct SynthSummary {
  int64_t train = 0, val = 0, test = 0, unseen = 0;
  std::map<std::string, int64_t> test_instances;  ///< per category
  double seconds = 0;
};

/// Renders and writes everything; Error naming the path for unwritable output.
SynthSummary write_phantom_world(const SynthOptions& options);

/// A contact sheet of the world `world` describes (write_phantom_world renders the same studies):
/// its first `n` studies (the train split's, unless n_train < n) in a grid, each with its mask
/// outlines in colour and its IMPRESSION underneath, and, when the world has an unseen set, one more
/// row of that set's first studies, captioned "[unseen]". PNG or JPEG by the path's extension.
void write_contact_sheet(const std::string& path, const SynthOptions& world, int64_t n);

/// The per-study seed used for study `index` of a world with seed `seed`.
uint64_t study_seed(uint64_t seed, int64_t index);

}  // namespace afloc::data::phantom
