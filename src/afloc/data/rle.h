#pragma once
/// Run-length encodings of binary masks used by the public localization datasets:
/// COCO compressed RLE strings (CheXlocalize) and SIIM-ACR's relative run-length pairs.
/// Hand-written: no Debian C/C++ library implements them (pycocotools is Python-only and not
/// packaged); both are a few lines and are checked against the authors' rle2mask golden and
/// round trips.
#include <cstdint>
#include <string>
#include <vector>

namespace afloc::data {

/// A binary mask, row-major (H, W), values 0/1.
struct Mask {
  int64_t height = 0, width = 0;
  std::vector<uint8_t> pixels;
  int64_t count() const;
};

/// COCO RLE counts (column-major runs starting with zeros) <-> mask.
std::vector<uint32_t> coco_counts(const Mask& mask);
Mask coco_decode_counts(const std::vector<uint32_t>& counts, int64_t height, int64_t width);
/// COCO compressed string form (pycocotools rleToString / rleFrString).
std::string coco_counts_to_string(const std::vector<uint32_t>& counts);
/// Error naming origin for a malformed string.
std::vector<uint32_t> coco_counts_from_string(const std::string& s, const std::string& origin = "RLE");
std::string coco_encode(const Mask& mask);
/// Error naming origin when the runs do not add up to height*width.
Mask coco_decode(const std::string& counts, int64_t height, int64_t width, const std::string& origin = "RLE");

/// SIIM-ACR "EncodedPixels": pairs (start offset relative to the end of the previous run, length),
/// 1-based, column-major; "-1" (or empty) = no mask. The authors' rle2mask.
std::string siim_encode(const Mask& mask);
Mask siim_decode(const std::string& rle, int64_t height, int64_t width, const std::string& origin = "RLE");

}  // namespace afloc::data
