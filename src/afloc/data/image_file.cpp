#include "afloc/data/image_file.h"

#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <vector>

#include "afloc/common/error.h"

namespace afloc::data {

void write_image_file(const std::string& path, const cv::Mat& image, int jpeg_quality) {
  std::vector<int> params;
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext == ".jpg" || ext == ".jpeg") params = {cv::IMWRITE_JPEG_QUALITY, jpeg_quality};
  std::vector<uchar> bytes;
  bool ok = false;
  try {
    ok = cv::imencode(ext, image, bytes, params);
  } catch (const cv::Exception& e) {
    throw Error(path + ": cannot write image (" + e.msg + ")");
  }
  if (!ok) throw Error(path + ": cannot write image");
  create_parent_dirs(path);
  write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

}  // namespace afloc::data
