#include "afloc/data/image.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstring>

#include "afloc/common/error.h"

namespace afloc::data {
namespace {

Gray8 from_mat(const cv::Mat& m) {
  Gray8 g;
  g.height = m.rows;
  g.width = m.cols;
  g.pixels.resize(static_cast<size_t>(m.rows) * static_cast<size_t>(m.cols));
  for (int r = 0; r < m.rows; ++r) {
    std::memcpy(g.pixels.data() + static_cast<size_t>(r) * static_cast<size_t>(m.cols), m.ptr<uint8_t>(r),
                static_cast<size_t>(m.cols));
  }
  return g;
}

cv::Mat to_mat(const Gray8& g) {
  // OpenCV only reads through this header; the const_cast never leads to a write.
  return cv::Mat(static_cast<int>(g.height), static_cast<int>(g.width), CV_8UC1,
                 const_cast<uint8_t*>(g.pixels.data()));
}

// Width x height from a PNG (IHDR) or JPEG (first SOFn marker) header, or {0, 0} when neither is
// recognised. Hand-written because OpenCV 4.6 offers no header-only query: the decode limit must
// hold before a huge image is decoded, not after.
std::pair<int64_t, int64_t> peek_dimensions(const std::string& b) {
  auto u8 = [&](size_t i) { return static_cast<int64_t>(static_cast<unsigned char>(b[i])); };
  if (b.size() >= 24 && b.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0)
    return {(u8(16) << 24) | (u8(17) << 16) | (u8(18) << 8) | u8(19), (u8(20) << 24) | (u8(21) << 16) | (u8(22) << 8) | u8(23)};
  if (b.size() >= 4 && u8(0) == 0xFF && u8(1) == 0xD8) {
    size_t i = 2;
    while (i + 9 < b.size()) {
      if (u8(i) != 0xFF) return {0, 0};
      const int64_t marker = u8(i + 1);
      if (marker == 0xFF) {  // fill byte
        ++i;
        continue;
      }
      const size_t len = static_cast<size_t>((u8(i + 2) << 8) | u8(i + 3));
      if (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC)
        return {(u8(i + 7) << 8) | u8(i + 8), (u8(i + 5) << 8) | u8(i + 6)};
      i += 2 + len;
    }
  }
  return {0, 0};
}

// False when a JPEG stream (SOI at the start) has no end-of-image marker after its first
// start-of-scan: the file was cut short. libjpeg decodes such a file with only a warning ("Premature
// end of JPEG file"), which OpenCV's imdecode swallows, filling the missing rows with grey, so a
// truncated film would train or be read silently wrong. Inside scan data every 0xFF byte is followed
// by 0x00 or a restart marker, so an 0xFF 0xD9 after the first SOS can only be the EOI; a thumbnail's
// own EOI (APP1) lies before it. Bytes after the EOI (some writers pad) are allowed.
bool jpeg_is_complete(const std::string& b) {
  auto u8 = [&](size_t i) { return static_cast<unsigned char>(b[i]); };
  size_t i = 2;
  while (i + 3 < b.size()) {
    if (u8(i) != 0xFF) return true;  // not a marker walk we understand: leave it to the decoder
    const unsigned marker = u8(i + 1);
    if (marker == 0xFF) {
      ++i;
      continue;
    }
    if (marker == 0xDA) {
      const size_t eoi = b.rfind("\xFF\xD9");
      return eoi != std::string::npos && eoi > i;
    }
    if (marker == 0xD9) return false;                      // EOI before any scan
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {  // markers without a length
      i += 2;
      continue;
    }
    i += 2 + ((static_cast<size_t>(u8(i + 2)) << 8) | u8(i + 3));
  }
  return false;  // the headers end before the first scan
}

}  // namespace

Gray8 read_gray8(const std::string& path, const ImageReadOptions& options) {
  if (is_dicom(path)) {
    const DicomImage d = read_dicom(path);
    if (d.rows * d.cols > options.max_pixels) {
      throw Error(path + ": image " + std::to_string(d.cols) + "x" + std::to_string(d.rows) + " exceeds the decode limit of " +
                  std::to_string(options.max_pixels) + " pixels");
    }
    Gray8 g;
    g.height = d.rows;
    g.width = d.cols;
    g.pixels = dicom_to_gray8(d, options.dicom_voi);
    return g;
  }
  const std::string bytes = read_file(path);
  const auto [w, h] = peek_dimensions(bytes);
  if (w * h > options.max_pixels) {
    throw Error(path + ": image " + std::to_string(w) + "x" + std::to_string(h) + " exceeds the decode limit of " +
                std::to_string(options.max_pixels) + " pixels (not decoded)");
  }
  // A header over the file bytes, not a copy; imdecode only reads it.
  const cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
  // Formats whose header is not peeked above are checked right after decoding (OpenCV itself
  // refuses more than CV_IO_MAX_IMAGE_PIXELS, 2^30).
  cv::Mat m;
  try {
    m = cv::imdecode(buf, cv::IMREAD_ANYDEPTH | cv::IMREAD_GRAYSCALE);
  } catch (const cv::Exception& e) {
    throw Error(path + ": cannot decode image (" + e.msg + ")");
  }
  if (m.empty()) throw Error(path + ": not a PNG/JPEG image OpenCV can decode (truncated or another format?)");
  if (bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0xFF && static_cast<unsigned char>(bytes[1]) == 0xD8 &&
      !jpeg_is_complete(bytes)) {
    throw Error(path + ": truncated JPEG (no end-of-image marker after the image data; " + std::to_string(bytes.size()) +
                " bytes)");
  }
  if (static_cast<int64_t>(m.rows) * m.cols > options.max_pixels) {
    throw Error(path + ": image " + std::to_string(m.cols) + "x" + std::to_string(m.rows) +
                " exceeds the decode limit of " + std::to_string(options.max_pixels) + " pixels");
  }
  // 8-bit files: the same decoder and colour conversion as cv2.imread(path, 0).
  if (m.depth() == CV_8U) return from_mat(m);
  // 16-bit (or other depths): min-max to 8 bits.
  cv::Mat f;
  m.convertTo(f, CV_64F);
  double lo = 0, hi = 0;
  cv::minMaxLoc(f, &lo, &hi);
  cv::Mat out;
  const double scale = hi > lo ? 255.0 / (hi - lo) : 0.0;
  f.convertTo(out, CV_8U, scale, -lo * scale);
  return from_mat(out);
}

namespace {

// The authors' _resize_img on any OpenCV depth: INTER_AREA to long side `size` (short side
// int(short * size / long)), zero pad centred (floor before, ceil after).
cv::Mat resize_pad_mat(const cv::Mat& in, int64_t size) {
  if (in.rows <= 0 || in.cols <= 0) throw Error("resize_pad: empty image");
  if (size <= 0) throw Error("resize_pad: size " + std::to_string(size) + " must be positive");
  const bool tall = in.rows >= in.cols;  // numpy argmax: height wins ties
  int64_t new_h = 0, new_w = 0;
  if (tall) {
    new_h = size;
    new_w = static_cast<int64_t>(static_cast<double>(in.cols) * (static_cast<double>(size) / static_cast<double>(in.rows)));
  } else {
    new_w = size;
    new_h = static_cast<int64_t>(static_cast<double>(in.rows) * (static_cast<double>(size) / static_cast<double>(in.cols)));
  }
  new_h = std::max<int64_t>(new_h, 1);
  new_w = std::max<int64_t>(new_w, 1);
  cv::Mat resized;
  cv::resize(in, resized, cv::Size(static_cast<int>(new_w), static_cast<int>(new_h)), 0, 0, cv::INTER_AREA);
  const int64_t pad = size - (tall ? new_w : new_h);
  const int64_t before = pad / 2, after = pad - pad / 2;
  cv::Mat padded;
  cv::copyMakeBorder(resized, padded, tall ? 0 : static_cast<int>(before), tall ? 0 : static_cast<int>(after),
                     tall ? static_cast<int>(before) : 0, tall ? static_cast<int>(after) : 0, cv::BORDER_CONSTANT,
                     cv::Scalar(0));
  return padded;
}

}  // namespace

Gray8 resize_pad(const Gray8& image, int64_t size) { return from_mat(resize_pad_mat(to_mat(image), size)); }

Gray8 resize_mask(const Gray8& mask, int64_t size) {
  // As the authors' CheXlocalize / COVID-Rural loaders: cast to float32 first, resize, >= 1e-5.
  cv::Mat f;
  to_mat(mask).convertTo(f, CV_32F);
  const cv::Mat r = resize_pad_mat(f, size);
  cv::Mat out = r >= 1e-5f;  // 0 or 255
  out /= 255;
  return from_mat(out);
}

torch::Tensor to_tensor(const Gray8& image) {
  return torch::from_blob(const_cast<uint8_t*>(image.pixels.data()), {image.height, image.width}, torch::kUInt8).clone();
}

Gray8 from_tensor(const torch::Tensor& t) {
  TORCH_CHECK(t.dim() == 2 && t.scalar_type() == torch::kUInt8, "expected an (H, W) uint8 tensor, got ", t.sizes(),
              " ", t.scalar_type());
  const torch::Tensor c = t.to(torch::kCPU).contiguous();
  Gray8 g;
  g.height = c.size(0);
  g.width = c.size(1);
  g.pixels.assign(c.data_ptr<uint8_t>(), c.data_ptr<uint8_t>() + c.numel());
  return g;
}

torch::Tensor preprocess(const Gray8& image, int64_t size) {
  const torch::Tensor u8 = to_tensor(resize_pad(image, size));
  // (x / 255 - 0.5) / 0.5 in float32, the same operations as torchvision's ToTensor + Normalize.
  const torch::Tensor x = (u8.to(torch::kFloat).div(255.0f) - 0.5f) / 0.5f;
  return x.unsqueeze(0).expand({3, size, size}).contiguous();
}

}  // namespace afloc::data
