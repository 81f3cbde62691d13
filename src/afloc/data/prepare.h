#pragma once
/// Offline preparation of a pretraining set: every image resized and padded once, as the loader
/// would each epoch, and written as an 8-bit PNG next to a manifest of the pairs. The authors
/// trained on MIMIC-CXR-JPG resized offline to 224 (SPEC §3); a full-resolution film (about
/// 2500x3000) costs ~50 ms of decoding, a prepared one under a millisecond.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "afloc/data/datasets.h"
#include "afloc/data/image.h"

namespace afloc::data {

struct PrepareOptions {
  std::string out;          ///< folder: manifest.csv, prepare.json, images/ (and unreadable.csv)
  std::string source_root;  ///< images under it keep their path below it in images/ ("" = none)
  int64_t size = 224;       ///< square side; the model's image_size makes training identical
  ImageReadOptions read;    ///< decode limit, DICOM conversion (as the run's data.dicom_voi)
  int threads = 1;          ///< decoding threads (CPU bound)
  bool progress = false;
  /// Written into prepare.json as "source" (what the samples were read from, for the record).
  std::map<std::string, std::string> source;
  /// Pairs the dataset reader skipped (missing image, empty report, ...): reported and recorded
  /// with the images found unreadable here.
  SkipLog read_skipped;
};

struct PrepareResult {
  std::string manifest;                     ///< out/manifest.csv
  int64_t written = 0;                      ///< images decoded and written now
  int64_t reused = 0;                       ///< images already prepared by an earlier, interrupted run
  std::map<std::string, int64_t> per_split; ///< pairs in the manifest, by split
  SkipLog skipped;  ///< read_skipped plus the unreadable images (their pairs are not in the manifest)
  int64_t bytes = 0;                        ///< size of the prepared images
  double seconds = 0;
};

/// Where a sample's prepared image goes, relative to `out`: "images/" + its path below
/// source_root with the extension replaced by ".png", or "images/external/" + its file name
/// for an image outside source_root.
std::string prepared_image_path(const std::string& image, const std::string& source_root);

/// Resizes and pads every sample's image to size x size with resize_pad (SPEC §4; what the
/// training loader does) and writes it as a PNG under out/images, then writes out/manifest.csv
/// (columns id, image, report, split; the samples in their order, images relative to out),
/// out/prepare.json and, when some image could not be read, out/unreadable.csv (image, error).
/// `afloc train -m out/manifest.csv` then reads the same pairs in the same order and, when the
/// model's image_size equals size, gets the same batches as from the sources. Resumable: a run
/// cut short leaves no manifest, and the next run into the same folder keeps the images already
/// written (each is written to a temporary name and renamed). An unreadable image is a counted
/// skip with its error, never fatal (a set with no readable image is an error); an output folder
/// prepared at another size or from other data is an error naming it. Images shared by several
/// samples are prepared once.
PrepareResult prepare_images(const std::vector<Sample>& samples, const PrepareOptions& options);

}  // namespace afloc::data
