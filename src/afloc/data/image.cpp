#include "afloc/data/image.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

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

// What the headers of a PNG or JPEG say before decoding. Hand-written because OpenCV 4.6 offers no
// header-only query (the decode limit must hold before a huge image is decoded, not after) and
// passes no libjpeg warning on.
struct Peek {
  int64_t width = 0, height = 0;  // 0 x 0 when the header is not recognised
  // JPEG only: whether an end-of-image marker follows the first start-of-scan. libjpeg decodes a
  // file cut short with only a warning, filling the missing rows with grey. Inside scan data every
  // 0xFF is followed by 0x00 or a restart marker, so an 0xFF 0xD9 after the first SOS can only be
  // the EOI (a thumbnail's own EOI, in APP1, lies before it); bytes after the EOI are allowed.
  bool complete = true;
  // JPEG only: the frame header (SOF marker 0xC0-0xCF; 0 = none seen), its sample precision in
  // bits and its number of components.
  int sof = 0, precision = 0, components = 0;
};

Peek peek(const std::string& b) {
  auto u8 = [&](size_t i) { return static_cast<int64_t>(static_cast<unsigned char>(b[i])); };
  Peek p;
  if (b.size() >= 24 && b.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0) {
    p.width = (u8(16) << 24) | (u8(17) << 16) | (u8(18) << 8) | u8(19);
    p.height = (u8(20) << 24) | (u8(21) << 16) | (u8(22) << 8) | u8(23);
    return p;
  }
  if (b.size() < 4 || u8(0) != 0xFF || u8(1) != 0xD8) return p;
  p.complete = false;  // until the walk reaches the first scan and an EOI after it
  size_t i = 2;
  while (i + 3 < b.size()) {
    if (u8(i) != 0xFF) {  // not a marker walk we understand: leave it to the decoder
      p.complete = true;
      return p;
    }
    const int64_t marker = u8(i + 1);
    if (marker == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (marker == 0xDA) {
      const size_t eoi = b.rfind("\xFF\xD9");
      p.complete = eoi != std::string::npos && eoi > i;
      return p;
    }
    if (marker == 0xD9) return p;  // EOI before any scan
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {  // markers without a length
      i += 2;
      continue;
    }
    if (p.width == 0 && marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC &&
        i + 9 < b.size()) {
      p.sof = static_cast<int>(marker);
      p.precision = static_cast<int>(u8(i + 4));
      p.height = (u8(i + 5) << 8) | u8(i + 6);
      p.width = (u8(i + 7) << 8) | u8(i + 8);
      p.components = static_cast<int>(u8(i + 9));
    }
    i += 2 + static_cast<size_t>((u8(i + 2) << 8) | u8(i + 3));
  }
  return p;  // the headers end before the first scan
}

// Min-max of any-depth grey values to 8 bits (16-bit PNGs, JPEGs above 8 bits).
Gray8 minmax_gray8(const cv::Mat& m) {
  cv::Mat f;
  m.convertTo(f, CV_64F);
  double lo = 0, hi = 0;
  cv::minMaxLoc(f, &lo, &hi);
  cv::Mat out;
  const double scale = hi > lo ? 255.0 / (hi - lo) : 0.0;
  f.convertTo(out, CV_8U, scale, -lo * scale);
  return from_mat(out);
}

// JPEGs that Debian's libjpeg-turbo 2.1 (OpenCV's decoder) cannot decode: 12-bit extended and
// lossless (process 14, 2-16 bits) streams, the "16-bit JPEGs" of medical archives. GDCM decodes
// them (its own 8-, 12- and 16-bit IJG builds) but only inside DICOM, so the stream is wrapped, as
// written here by hand, in the smallest DICOM file that holds it (encapsulated pixel data, one
// fragment) and read by read_dicom: in the helper process, after the same structure checks.
bool needs_gdcm(const Peek& h) { return h.sof != 0 && (h.precision != 8 || h.sof == 0xC3); }

std::string jpeg_as_dicom(const std::string& path, const std::string& jpeg, const Peek& h) {
  std::string syntax;
  if (h.sof == 0xC1 || h.sof == 0xC0) syntax = "1.2.840.10008.1.2.4.51";  // extended (process 2 & 4)
  else if (h.sof == 0xC3) syntax = "1.2.840.10008.1.2.4.57";             // lossless (process 14)
  else {
    char sof[8];
    std::snprintf(sof, sizeof sof, "%02X", static_cast<unsigned>(h.sof));
    throw Error(path + ": a " + std::to_string(h.precision) + "-bit JPEG of process SOF " + sof +
                " (progressive, hierarchical or arithmetic-coded), which no decoder here reads");
  }
  if (h.components != 1)
    throw Error(path + ": a " + std::to_string(h.precision) + "-bit JPEG with " + std::to_string(h.components) +
                " components; above 8 bits only grey JPEGs are read");
  if (h.precision < 2 || h.precision > 16 || h.width < 1 || h.height < 1 || h.width > 65535 || h.height > 65535)
    throw Error(path + ": JPEG frame header out of range (" + std::to_string(h.width) + "x" + std::to_string(h.height) + ", " +
                std::to_string(h.precision) + " bits)");
  std::string f(128, '\0');
  f += "DICM";
  auto u16 = [&](uint32_t v) { f += static_cast<char>(v & 0xFF), f += static_cast<char>((v >> 8) & 0xFF); };
  auto u32 = [&](uint32_t v) { u16(v & 0xFFFF), u16(v >> 16); };
  auto text = [&](uint16_t g, uint16_t e, const char* vr, std::string v, char pad) {
    if (v.size() % 2) v += pad;
    u16(g), u16(e), f += vr, u16(static_cast<uint32_t>(v.size())), f += v;
  };
  auto us = [&](uint16_t e, uint32_t v) { u16(0x0028), u16(e), f += "US", u16(2), u16(v); };
  text(0x0002, 0x0010, "UI", syntax, '\0');
  text(0x0008, 0x0016, "UI", "1.2.840.10008.5.1.4.1.1.7", '\0');  // secondary capture
  us(0x0002, 1);
  text(0x0028, 0x0004, "CS", "MONOCHROME2", ' ');
  us(0x0010, static_cast<uint32_t>(h.height));
  us(0x0011, static_cast<uint32_t>(h.width));
  us(0x0100, h.precision > 8 ? 16 : 8);
  us(0x0101, static_cast<uint32_t>(h.precision));
  us(0x0102, static_cast<uint32_t>(h.precision - 1));
  us(0x0103, 0);
  u16(0x7FE0), u16(0x0010), f += "OB", u16(0), u32(0xFFFFFFFF);  // encapsulated pixel data
  u16(0xFFFE), u16(0xE000), u32(0);                              // empty basic offset table
  const std::string frag = jpeg.size() % 2 ? jpeg + '\0' : jpeg;
  u16(0xFFFE), u16(0xE000), u32(static_cast<uint32_t>(frag.size()));
  f += frag;
  u16(0xFFFE), u16(0xE0DD), u32(0);  // sequence delimiter
  return f;
}

Gray8 read_jpeg_with_gdcm(const std::string& path, const std::string& jpeg, const Peek& h) {
  const std::string dicom = jpeg_as_dicom(path, jpeg, h);
  std::string tmp = (std::filesystem::temp_directory_path() / "afloc_jpeg_XXXXXX").string();
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) throw Error(path + ": cannot create a temporary file in " + std::filesystem::temp_directory_path().string());
  ::close(fd);
  struct Remove {
    std::string p;
    ~Remove() { std::remove(p.c_str()); }
  } remove{tmp};
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(dicom.data(), static_cast<std::streamsize>(dicom.size()));
    if (!out.flush()) throw Error(path + ": cannot write the temporary file " + tmp);
  }
  DicomImage d;
  try {
    d = read_dicom(tmp);
  } catch (const std::exception& e) {
    throw Error(path + ": " + std::to_string(h.precision) + "-bit JPEG not decoded (" + e.what() + ")");
  }
  cv::Mat m(static_cast<int>(d.rows), static_cast<int>(d.cols), CV_64F, d.stored.data());
  if (h.precision != 8) return minmax_gray8(m);
  // 8-bit samples (lossless JPEG) keep their values, as 8-bit files read by OpenCV do.
  cv::Mat out;
  m.convertTo(out, CV_8U);
  return from_mat(out);
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
  const Peek header = peek(bytes);
  if (header.width * header.height > options.max_pixels) {
    throw Error(path + ": image " + std::to_string(header.width) + "x" + std::to_string(header.height) +
                " exceeds the decode limit of " + std::to_string(options.max_pixels) + " pixels (not decoded)");
  }
  if (!header.complete) {
    throw Error(path + ": truncated JPEG (no end-of-image marker after the image data; " + std::to_string(bytes.size()) +
                " bytes)");
  }
  if (needs_gdcm(header)) return read_jpeg_with_gdcm(path, bytes, header);
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
  if (static_cast<int64_t>(m.rows) * m.cols > options.max_pixels) {
    throw Error(path + ": image " + std::to_string(m.cols) + "x" + std::to_string(m.rows) +
                " exceeds the decode limit of " + std::to_string(options.max_pixels) + " pixels");
  }
  // 8-bit files: the same decoder and colour conversion as cv2.imread(path, 0).
  if (m.depth() == CV_8U) return from_mat(m);
  // 16-bit (or other depths): min-max to 8 bits.
  return minmax_gray8(m);
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
