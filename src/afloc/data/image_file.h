#pragma once
/// Writing an OpenCV image to a file (PNG, or JPEG by extension), creating its folder: one place
/// for the error handling every writer of overlays, sheets, curves and phantom films needs.
#include <opencv2/core.hpp>

#include <string>

namespace afloc::data {

/// Writes `image` to `path` (format from the extension; JPEG at `jpeg_quality`), creating the
/// parent folder; atomically (a temporary file renamed), so a file that exists is whole. Error
/// naming the file when it cannot be encoded or written.
void write_image_file(const std::string& path, const cv::Mat& image, int jpeg_quality = 95);

}  // namespace afloc::data
