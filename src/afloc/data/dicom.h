#pragma once
/// DICOM reading through GDCM (SPEC §4): the first frame, rescale slope/intercept, VOI window (or
/// min-max), MONOCHROME1 inversion, to 8-bit grey; every transfer syntax GDCM decodes (JPEG
/// baseline/lossless/LS, JPEG 2000, RLE, deflate, big endian).
#include <cstdint>
#include <string>
#include <vector>

#include "afloc/data/rle.h"

namespace afloc::data {

/// How stored values become 8 bits.
enum class DicomVoi {
  kAuto,     ///< the first VOI window (0028,1050/1051) when present, else min-max of the rescaled frame
  kMinMax,   ///< min-max of the rescaled frame
  kAuthors,  ///< the authors' read_from_dicom: stored values x 255 / max, |.| saturated (no rescale, no window)
};

/// The config and flag spellings of DicomVoi, in its order: "auto", "minmax", "authors".
const std::vector<std::string>& dicom_voi_names();
/// One of dicom_voi_names(); Error naming the value otherwise.
DicomVoi parse_dicom_voi(const std::string& name);

struct DicomImage {
  int64_t rows = 0, cols = 0, frames = 1;
  int samples_per_pixel = 1;
  std::string photometric;  ///< "MONOCHROME1", "MONOCHROME2", "RGB", ...
  double slope = 1, intercept = 0;
  bool has_window = false;
  double window_center = 0, window_width = 0;
  std::vector<double> stored;  ///< first frame, stored values (before rescale), row-major; grey only
};

/// True when the file starts like DICOM Part 10 ("DICM" at byte 128).
bool is_dicom(const std::string& path);

/// Decodes the first frame's stored values and the attributes needed to display them. Error naming
/// the file for unreadable files, files cut short, undecodable pixel data, or colour images other
/// than RGB (RGB is converted to grey with OpenCV's weights). The file's element lengths are
/// checked first; then GDCM decodes it in a helper process (`in_helper`; Linux): the program
/// `afloc-dicom` beside the running executable, or $AFLOC_DICOM_HELPER. Debian's GDCM keeps its
/// assertions and aborts its process on some corrupt files; the helper's abort becomes an Error.
/// Without a helper program, or with `in_helper = false`, GDCM decodes in this process.
DicomImage read_dicom(const std::string& path, bool in_helper = true);

/// The `afloc-dicom` helper program's loop: decodes the paths it is sent on stdin, answers on
/// stdout, until stdin closes. Returns the exit code.
int serve_dicom_helper();

/// 8-bit grey (H, W) from a decoded DICOM: rescale, VOI (window or min-max), MONOCHROME1 inversion.
std::vector<uint8_t> dicom_to_gray8(const DicomImage& image, DicomVoi voi = DicomVoi::kAuto);

}  // namespace afloc::data
