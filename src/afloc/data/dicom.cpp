#include "afloc/data/dicom.h"

#include <gdcmImageReader.h>
#include <gdcmPhotometricInterpretation.h>
#include <gdcmPixelFormat.h>
#include <gdcmTrace.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "afloc/common/error.h"

namespace afloc::data {
namespace {

template <typename T>
void widen(const char* src, size_t n, size_t stride, size_t channels, std::vector<double>& out) {
  out.resize(n);
  for (size_t i = 0; i < n; ++i) {
    if (channels == 1) {
      T v;
      std::memcpy(&v, src + i * stride, sizeof(T));
      out[i] = static_cast<double>(v);
    } else {
      // RGB -> grey with OpenCV's weights (cv::COLOR_RGB2GRAY), so a colour DICOM reads like a
      // colour PNG does.
      T r, g, b;
      std::memcpy(&r, src + i * stride, sizeof(T));
      std::memcpy(&g, src + i * stride + sizeof(T), sizeof(T));
      std::memcpy(&b, src + i * stride + 2 * sizeof(T), sizeof(T));
      out[i] = 0.299 * static_cast<double>(r) + 0.587 * static_cast<double>(g) + 0.114 * static_cast<double>(b);
    }
  }
}

// First value of a multi-valued decimal string attribute (e.g. Window Center "40\40\40").
bool first_ds(const gdcm::DataSet& ds, uint16_t group, uint16_t element, double& out) {
  const gdcm::Tag tag(group, element);
  if (!ds.FindDataElement(tag)) return false;
  const gdcm::DataElement& de = ds.GetDataElement(tag);
  const gdcm::ByteValue* bv = de.GetByteValue();
  if (!bv || bv->GetLength() == 0) return false;
  std::string s(bv->GetPointer(), bv->GetLength());
  s = s.substr(0, s.find('\\'));
  try {
    size_t used = 0;
    out = std::stod(s, &used);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

bool is_dicom(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char buf[132];
  if (!in.read(buf, sizeof buf)) return false;
  return std::memcmp(buf + 128, "DICM", 4) == 0;
}

DicomImage read_dicom(const std::string& path) {
  // GDCM reports problems on stderr; ours go into the Error below, naming the file.
  gdcm::Trace::SetWarning(false);
  gdcm::Trace::SetError(false);
  gdcm::ImageReader reader;
  reader.SetFileName(path.c_str());
  if (!reader.Read()) throw Error(path + ": not a DICOM image GDCM can read (no pixel data, truncated or another format?)");
  const gdcm::Image& img = reader.GetImage();
  DicomImage d;
  const unsigned int* dims = img.GetDimensions();
  d.cols = dims[0];
  d.rows = dims[1];
  d.frames = img.GetNumberOfDimensions() > 2 ? std::max<int64_t>(1, dims[2]) : 1;
  if (d.rows <= 0 || d.cols <= 0) throw Error(path + ": DICOM image has no rows or columns");
  const gdcm::PixelFormat pf = img.GetPixelFormat();
  d.samples_per_pixel = pf.GetSamplesPerPixel();
  d.photometric = gdcm::PhotometricInterpretation::GetPIString(img.GetPhotometricInterpretation());
  if (!d.photometric.empty() && d.photometric.back() == ' ') d.photometric.pop_back();
  const bool mono = d.photometric == "MONOCHROME1" || d.photometric == "MONOCHROME2";
  if (!(mono && d.samples_per_pixel == 1) && !(d.photometric == "RGB" && d.samples_per_pixel == 3)) {
    throw Error(path + ": unsupported DICOM photometric interpretation " + d.photometric + " with " +
                std::to_string(d.samples_per_pixel) + " samples per pixel (expected MONOCHROME1/2 or RGB)");
  }
  d.slope = img.GetSlope();
  d.intercept = img.GetIntercept();
  const gdcm::DataSet& ds = reader.GetFile().GetDataSet();
  double c = 0, w = 0;
  if (first_ds(ds, 0x0028, 0x1050, c) && first_ds(ds, 0x0028, 0x1051, w) && w > 0) {
    d.has_window = true;
    d.window_center = c;
    d.window_width = w;
  }
  std::vector<char> buf(img.GetBufferLength());
  if (buf.empty() || !img.GetBuffer(buf.data())) {
    throw Error(path + ": cannot decode the DICOM pixel data (transfer syntax " +
                std::string(reader.GetFile().GetHeader().GetDataSetTransferSyntax().GetString() ? reader.GetFile().GetHeader().GetDataSetTransferSyntax().GetString() : "?") + ")");
  }
  const size_t n = static_cast<size_t>(d.rows * d.cols), spp = static_cast<size_t>(d.samples_per_pixel);
  const size_t bytes = pf.GetPixelSize() / spp;  // per sample
  const size_t frame_bytes = n * spp * bytes;
  if (buf.size() < frame_bytes) throw Error(path + ": DICOM pixel data shorter than one frame");
  const size_t stride = spp * bytes;
  switch (pf.GetScalarType()) {
    case gdcm::PixelFormat::UINT8: widen<uint8_t>(buf.data(), n, stride, spp, d.stored); break;
    case gdcm::PixelFormat::INT8: widen<int8_t>(buf.data(), n, stride, spp, d.stored); break;
    case gdcm::PixelFormat::UINT12:
    case gdcm::PixelFormat::UINT16: widen<uint16_t>(buf.data(), n, stride, spp, d.stored); break;
    case gdcm::PixelFormat::INT12:
    case gdcm::PixelFormat::INT16: widen<int16_t>(buf.data(), n, stride, spp, d.stored); break;
    case gdcm::PixelFormat::UINT32: widen<uint32_t>(buf.data(), n, stride, spp, d.stored); break;
    case gdcm::PixelFormat::INT32: widen<int32_t>(buf.data(), n, stride, spp, d.stored); break;
    case gdcm::PixelFormat::FLOAT32: widen<float>(buf.data(), n, stride, spp, d.stored); break;
    case gdcm::PixelFormat::FLOAT64: widen<double>(buf.data(), n, stride, spp, d.stored); break;
    default: throw Error(path + ": unsupported DICOM pixel format " + std::string(pf.GetScalarTypeAsString()));
  }
  return d;
}

std::vector<uint8_t> dicom_to_gray8(const DicomImage& d, DicomVoi voi) {
  const size_t n = d.stored.size();
  std::vector<uint8_t> out(n);
  const bool invert = d.photometric == "MONOCHROME1";
  if (voi == DicomVoi::kAuthors) {
    // cv2.convertScaleAbs(x, alpha=255/x.max()): saturate(|x * alpha|) with round-half-even.
    const double mx = *std::max_element(d.stored.begin(), d.stored.end());
    const double alpha = 255.0 / mx;
    for (size_t i = 0; i < n; ++i) {
      const double v = std::nearbyint(std::abs(d.stored[i] * alpha));
      const auto u = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
      out[i] = invert ? static_cast<uint8_t>(255 - u) : u;
    }
    return out;
  }
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = d.stored[i] * d.slope + d.intercept;
  if (voi == DicomVoi::kAuto && d.has_window) {
    // DICOM PS3.3 C.11.2.1.2.1, linear VOI LUT function, output range 0..255.
    const double c = d.window_center, w = d.window_width;
    for (size_t i = 0; i < n; ++i) {
      double y;
      if (w <= 1) {
        y = v[i] <= c - 0.5 ? 0.0 : 255.0;
      } else if (v[i] <= c - 0.5 - (w - 1) / 2) {
        y = 0;
      } else if (v[i] > c - 0.5 + (w - 1) / 2) {
        y = 255;
      } else {
        y = ((v[i] - (c - 0.5)) / (w - 1) + 0.5) * 255.0;
      }
      const auto u = static_cast<uint8_t>(std::lround(std::clamp(y, 0.0, 255.0)));
      out[i] = invert ? static_cast<uint8_t>(255 - u) : u;
    }
    return out;
  }
  const auto [lo_it, hi_it] = std::minmax_element(v.begin(), v.end());
  const double lo = *lo_it, hi = *hi_it;
  for (size_t i = 0; i < n; ++i) {
    const double y = hi > lo ? (v[i] - lo) * 255.0 / (hi - lo) : 0.0;
    const auto u = static_cast<uint8_t>(std::lround(std::clamp(y, 0.0, 255.0)));
    out[i] = invert ? static_cast<uint8_t>(255 - u) : u;
  }
  return out;
}

}  // namespace afloc::data
