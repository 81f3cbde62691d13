#include "afloc/data/dicom.h"

#include <gdcmImageReader.h>
#include <gdcmPhotometricInterpretation.h>
#include <gdcmPixelFormat.h>
#include <gdcmTrace.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>

#if defined(__linux__)
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "afloc/common/error.h"
#include "afloc/common/log.h"

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

// The bytes a DicomWalk reads: a buffer, or a file read on demand 64 kB at a time. The walk looks
// at element headers and steps over values, so a film's pixel data (nearly all of its bytes) is
// never read here; GDCM reads the file once, in the helper.
class Bytes {
 public:
  explicit Bytes(std::string buffer) : block_(std::move(buffer)), size_(block_.size()) {}
  static Bytes file(const std::string& path) {
    Bytes b;
    b.path_ = path;
    b.in_.open(path, std::ios::binary);
    if (!b.in_) throw Error(path + ": cannot open");
    b.in_.seekg(0, std::ios::end);
    b.size_ = static_cast<size_t>(b.in_.tellg());
    return b;
  }
  size_t size() const { return size_; }
  char operator[](size_t i) const {
    if (i - start_ >= block_.size()) load(i);
    return block_[i - start_];
  }
  std::string substr(size_t pos, size_t len) const {
    std::string out;
    out.reserve(len);
    for (size_t i = pos; i < pos + len; ++i) out += (*this)[i];
    return out;
  }
  // Bytes from pos to the end, in one read (a deflated data set, inflated whole).
  std::string tail(size_t pos) const {
    if (path_.empty()) return block_.substr(pos);
    std::string out(size_ - pos, '\0');
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(pos));
    if (!in_.read(out.data(), static_cast<std::streamsize>(out.size()))) throw Error(path_ + ": read error (was the file changed while read?)");
    return out;
  }

 private:
  Bytes() = default;
  void load(size_t i) const {
    constexpr size_t kBlock = size_t{1} << 16;
    start_ = i / kBlock * kBlock;
    block_.resize(std::min(kBlock, size_ - start_));
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(start_));
    if (path_.empty() || !in_.read(block_.data(), static_cast<std::streamsize>(block_.size())))
      throw Error(path_ + ": read error at byte " + std::to_string(i) + " (was the file changed while read?)");
  }
  std::string path_;
  mutable std::ifstream in_;
  mutable std::string block_;
  mutable size_t start_ = 0;
  size_t size_ = 0;
};

// Walks a Part 10 file's data elements before GDCM reads it: every declared length must fit in the
// file, pixel data must be there, and the pixel attributes GDCM asserts on must hold values it
// accepts. Hand-written because Debian's GDCM 3.0 is built with assertions: on a file cut short it
// aborts its process (e.g. assert(is.good()) in FileMetaInformation::ReadCompat) instead of failing
// Reader::Read(), and at other cut points it reads the missing pixels as zeros. Where the walk
// cannot follow the encoding (a VR that is not the standard's, a delimiter out of place: broken or
// merely unusual writers) it stops and leaves the file to GDCM, which runs in the helper process.
class DicomWalk {
 public:
  explicit DicomWalk(const Bytes& bytes) : b_(bytes) {}

  /// Empty when the file passes (or the walk stopped); else what is cut short, corrupt or missing.
  std::string problem() {
    if (b_.size() < 132) return "";  // no Part 10 preamble: GDCM says what it is
    try {
      size_t pos = 132;
      // File meta information: group 0002, explicit VR little endian.
      std::string syntax;
      while (b_.size() - pos >= 8 && u16(pos, false) == 0x0002) {
        const size_t start = pos;
        const uint16_t element = u16(pos + 2, false);
        const uint32_t len = header(pos, Mode{true, false});
        if (len == kUndefined) throw GiveUp{};
        need(pos, len, start, 0x0002, element);
        if (element == 0x0010) syntax = b_.substr(pos, len);
        pos += len;
      }
      while (!syntax.empty() && (syntax.back() == '\0' || syntax.back() == ' ')) syntax.pop_back();
      if (syntax == "1.2.840.10008.1.2.1.99") {
        // Deflated explicit VR little endian: the data set is a raw deflate stream.
        const Bytes data(inflate_raw(pos));
        DicomWalk inflated(data);
        return inflated.data_set(0, Mode{true, false});
      }
      return data_set(pos, Mode{syntax != "1.2.840.10008.1.2", syntax == "1.2.840.10008.1.2.2"});
    } catch (const Cut& c) {
      return c.what;
    } catch (const GiveUp&) {
      return "";
    }
  }

 private:
  static constexpr uint32_t kUndefined = 0xFFFFFFFFu;
  struct Mode {
    bool explicit_vr, big_endian;
  };
  struct Cut {
    std::string what;
  };
  struct GiveUp {};

  std::string data_set(size_t pos, Mode m) {
    // Some writers store an implicit-VR data set under an explicit transfer syntax; GDCM reads
    // those, so the walk follows it when the first element carries no VR.
    if (m.explicit_vr && b_.size() - pos >= 8 && !vr_code(pos + 4)) m.explicit_vr = false;
    walk(pos, m, 0, false);
    if (!pixel_data_) return "no pixel data element (7FE0,0010)";  // GDCM's ImageReader fails on it too
    if (samples_ != 1 && samples_ != 3 && samples_ != 4) return "samples per pixel (0028,0002) is " + std::to_string(samples_);
    if (stored_ > allocated_) {
      return "bits stored (0028,0101) " + std::to_string(stored_) + " exceed bits allocated (0028,0100) " + std::to_string(allocated_);
    }
    if (high_bit_ >= stored_ && stored_ > 0) {
      return "high bit (0028,0102) " + std::to_string(high_bit_) + " is not below bits stored " + std::to_string(stored_);
    }
    return "";
  }
  std::string inflate_raw(size_t pos) const {
    std::string in = b_.tail(pos);
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) throw GiveUp{};
    z.next_in = reinterpret_cast<Bytef*>(in.data());
    z.avail_in = static_cast<uInt>(in.size());
    std::string out;
    char buf[1 << 16];
    int rc = Z_OK;
    while (rc == Z_OK) {
      z.next_out = reinterpret_cast<Bytef*>(buf);
      z.avail_out = sizeof buf;
      rc = inflate(&z, Z_NO_FLUSH);
      out.append(buf, sizeof buf - z.avail_out);
      if (rc == Z_BUF_ERROR && z.avail_in == 0) break;  // input used up before the stream's end
    }
    inflateEnd(&z);
    if (rc != Z_STREAM_END) throw Cut{"the deflated data set is cut short or corrupt (zlib: " + std::to_string(rc) + ")"};
    return out;
  }
  uint16_t u16(size_t i, bool be) const {
    const auto a = static_cast<uint16_t>(static_cast<unsigned char>(b_[i]));
    const auto c = static_cast<uint16_t>(static_cast<unsigned char>(b_[i + 1]));
    return be ? static_cast<uint16_t>((a << 8) | c) : static_cast<uint16_t>((c << 8) | a);
  }
  uint32_t u32(size_t i, bool be) const {
    const uint32_t first = u16(i, be), second = u16(i + 2, be);
    return be ? (first << 16) | second : (second << 16) | first;
  }
  static std::string tag_name(uint16_t group, uint16_t element) {
    char t[16];
    std::snprintf(t, sizeof t, "(%04X,%04X)", group, element);
    return t;
  }
  // The VR at i when it is one of PS3.5's; 2: with a 4-byte length (12-byte header), 1: 2-byte.
  int vr_code(size_t i) const {
    static const char* const kShort[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO",
                                         "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"};
    static const char* const kLong[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UR", "UT", "UN", "SV", "UV"};
    auto is = [&](const char* vr) { return vr[0] == b_[i] && vr[1] == b_[i + 1]; };
    if (std::any_of(std::begin(kLong), std::end(kLong), is)) return 2;
    if (std::any_of(std::begin(kShort), std::end(kShort), is)) return 1;
    return 0;
  }
  // The element header at pos (at least 8 bytes are there): advances pos past it and returns the
  // value length.
  uint32_t header(size_t& pos, Mode m) const {
    const uint16_t group = u16(pos, m.big_endian), element = u16(pos + 2, m.big_endian);
    if (group == 0xFFFE || !m.explicit_vr) {
      const uint32_t len = u32(pos + 4, m.big_endian);
      pos += 8;
      return len;
    }
    const int vr = vr_code(pos + 4);
    if (vr == 0) throw GiveUp{};
    if (vr == 1) {
      const uint32_t len = u16(pos + 6, m.big_endian);
      pos += 8;
      return len;
    }
    if (b_.size() - pos < 12) {
      throw Cut{"the header of element " + tag_name(group, element) + " at byte " + std::to_string(pos) + " is cut"};
    }
    const uint32_t len = u32(pos + 8, m.big_endian);
    pos += 12;
    return len;
  }
  void need(size_t pos, uint32_t len, size_t start, uint16_t group, uint16_t element) const {
    if (len != kUndefined && len > b_.size() - pos) {
      throw Cut{"element " + tag_name(group, element) + " at byte " + std::to_string(start) + " declares " +
                std::to_string(len) + " bytes, " + std::to_string(b_.size() - pos) + " are left"};
    }
  }
  // Elements from pos to the end of the file; inside an item of undefined length, to its delimiter.
  size_t walk(size_t pos, Mode m, int depth, bool in_item) {
    if (depth > 32) throw GiveUp{};
    while (pos < b_.size()) {
      if (b_.size() - pos < 8) {
        bool zeros = true;
        for (size_t i = pos; i < b_.size(); ++i) zeros = zeros && b_[i] == 0;
        if (!in_item && zeros) return b_.size();  // zero padding at the end of the file
        throw Cut{"the file ends inside an element header at byte " + std::to_string(pos)};
      }
      const size_t start = pos;
      const uint16_t group = u16(pos, m.big_endian), element = u16(pos + 2, m.big_endian);
      if (group == 0xFFFE) {
        if (in_item && element == 0xE00D) return pos + 8;
        throw GiveUp{};
      }
      const bool un = m.explicit_vr && b_[pos + 4] == 'U' && b_[pos + 5] == 'N';
      const uint32_t len = header(pos, m);
      need(pos, len, start, group, element);
      if (depth == 0) note(group, element, pos, len, m);
      if (len != kUndefined) {
        pos += len;
        continue;
      }
      // Undefined length: a sequence, encapsulated pixel data, or UN holding an implicit-VR sequence.
      pos = items(pos, un ? Mode{false, false} : m, depth + 1, group, element);
    }
    if (in_item) throw Cut{"the file ends inside an item (no item delimiter)"};
    return pos;
  }
  // Items of a sequence (or fragments of encapsulated pixel data) up to the sequence delimiter.
  size_t items(size_t pos, Mode m, int depth, uint16_t group, uint16_t element) {
    for (;;) {
      if (b_.size() - pos < 8) throw Cut{"the file ends inside " + tag_name(group, element) + " (no sequence delimiter)"};
      const size_t start = pos;
      const uint16_t g = u16(pos, m.big_endian), e = u16(pos + 2, m.big_endian);
      const uint32_t len = u32(pos + 4, m.big_endian);
      pos += 8;
      if (g == 0xFFFE && e == 0xE0DD) return pos;
      if (g != 0xFFFE || e != 0xE000) throw GiveUp{};
      if (len == kUndefined) {
        pos = walk(pos, m, depth + 1, true);
        continue;
      }
      need(pos, len, start, group, element);
      pos += len;
    }
  }
  // Top-level attributes GDCM asserts on.
  void note(uint16_t group, uint16_t element, size_t pos, uint32_t len, Mode m) {
    if (group == 0x7FE0 && (element == 0x0010 || element == 0x0008 || element == 0x0009)) pixel_data_ = true;
    if (group != 0x0028 || len != 2) return;
    const int v = u16(pos, m.big_endian);
    if (element == 0x0002) samples_ = v;
    if (element == 0x0100) allocated_ = v;
    if (element == 0x0101) stored_ = v;
    if (element == 0x0102) high_bit_ = v;
  }

  const Bytes& b_;
  bool pixel_data_ = false;
  int samples_ = 1, allocated_ = 0, stored_ = 0, high_bit_ = 0;
};

enum class Scalar : int { kU8, kI8, kU16, kI16, kU32, kI32, kF32, kF64 };

size_t scalar_bytes(Scalar s) {
  switch (s) {
    case Scalar::kU8:
    case Scalar::kI8: return 1;
    case Scalar::kU16:
    case Scalar::kI16: return 2;
    case Scalar::kU32:
    case Scalar::kI32:
    case Scalar::kF32: return 4;
    case Scalar::kF64: return 8;
  }
  return 1;
}

// The first frame as GDCM decodes it, before widening to doubles: what a decoding child process
// sends back to its parent.
struct RawFrame {
  DicomImage image;  // everything but `stored`
  Scalar scalar = Scalar::kU8;
  std::string bytes;   // from `offset` on: rows x cols x samples, native byte order
  size_t offset = 0;   // where the frame starts in `bytes` (a helper's whole message, not copied)
};

RawFrame decode_raw(const std::string& path) {
  // GDCM reports problems on stderr; ours go into the Errors below, naming the file.
  gdcm::Trace::SetWarning(false);
  gdcm::Trace::SetError(false);
  gdcm::ImageReader reader;
  reader.SetFileName(path.c_str());
  if (!reader.Read()) throw Error(path + ": not a DICOM image GDCM can read (no pixel data, truncated or another format?)");
  const gdcm::Image& img = reader.GetImage();
  RawFrame raw;
  DicomImage& d = raw.image;
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
  switch (pf.GetScalarType()) {
    case gdcm::PixelFormat::UINT8: raw.scalar = Scalar::kU8; break;
    case gdcm::PixelFormat::INT8: raw.scalar = Scalar::kI8; break;
    case gdcm::PixelFormat::UINT12:
    case gdcm::PixelFormat::UINT16: raw.scalar = Scalar::kU16; break;
    case gdcm::PixelFormat::INT12:
    case gdcm::PixelFormat::INT16: raw.scalar = Scalar::kI16; break;
    case gdcm::PixelFormat::UINT32: raw.scalar = Scalar::kU32; break;
    case gdcm::PixelFormat::INT32: raw.scalar = Scalar::kI32; break;
    case gdcm::PixelFormat::FLOAT32: raw.scalar = Scalar::kF32; break;
    case gdcm::PixelFormat::FLOAT64: raw.scalar = Scalar::kF64; break;
    default: throw Error(path + ": unsupported DICOM pixel format " + std::string(pf.GetScalarTypeAsString()));
  }
  std::string buf(img.GetBufferLength(), '\0');
  if (buf.empty() || !img.GetBuffer(buf.data())) {
    const char* syntax = reader.GetFile().GetHeader().GetDataSetTransferSyntax().GetString();
    throw Error(path + ": cannot decode the DICOM pixel data (transfer syntax " + std::string(syntax ? syntax : "?") + ")");
  }
  const size_t frame_bytes = static_cast<size_t>(d.rows * d.cols) * static_cast<size_t>(d.samples_per_pixel) *
                             scalar_bytes(raw.scalar);
  if (buf.size() < frame_bytes) throw Error(path + ": DICOM pixel data shorter than one frame");
  // Native pixel data: GDCM pads a short value with zeros rather than failing.
  const gdcm::ByteValue* native = img.GetDataElement().GetByteValue();
  if (native && pf.GetBitsAllocated() % 8 == 0 && native->GetLength() < frame_bytes) {
    throw Error(path + ": DICOM pixel data holds " + std::to_string(native->GetLength()) + " bytes, one " +
                std::to_string(d.cols) + "x" + std::to_string(d.rows) + " frame needs " + std::to_string(frame_bytes));
  }
  buf.resize(frame_bytes);  // the first frame
  raw.bytes = std::move(buf);
  return raw;
}

DicomImage widen_frame(RawFrame raw) {
  DicomImage d = std::move(raw.image);
  const size_t n = static_cast<size_t>(d.rows * d.cols), spp = static_cast<size_t>(d.samples_per_pixel);
  const size_t stride = spp * scalar_bytes(raw.scalar);
  const char* src = raw.bytes.data() + raw.offset;
  switch (raw.scalar) {
    case Scalar::kU8: widen<uint8_t>(src, n, stride, spp, d.stored); break;
    case Scalar::kI8: widen<int8_t>(src, n, stride, spp, d.stored); break;
    case Scalar::kU16: widen<uint16_t>(src, n, stride, spp, d.stored); break;
    case Scalar::kI16: widen<int16_t>(src, n, stride, spp, d.stored); break;
    case Scalar::kU32: widen<uint32_t>(src, n, stride, spp, d.stored); break;
    case Scalar::kI32: widen<int32_t>(src, n, stride, spp, d.stored); break;
    case Scalar::kF32: widen<float>(src, n, stride, spp, d.stored); break;
    case Scalar::kF64: widen<double>(src, n, stride, spp, d.stored); break;
  }
  return d;
}

#if defined(__linux__)
// GDCM runs in a helper process, `afloc-dicom`: Debian's build keeps its assertions, and a file
// corrupt in a way the structure walk cannot see (a bad planar configuration, a broken RLE or JPEG
// stream) makes it abort. In a helper that ends as an Error naming the file; in this process it
// would end the whole run or service. The helper is started with posix_spawn, which runs no
// pthread_atfork handlers: a fork() from a loader thread would run OpenBLAS's, which stop its
// worker threads under a matrix product running in another thread and hang it. Each calling thread
// keeps its own helper (decoding stays parallel) and starts it again after a failure.
// Hand-written because no Debian library sandboxes a decoder.
template <typename T>
void put(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}
template <typename T>
T take(const std::string& in, size_t& pos) {
  if (in.size() - pos < sizeof(T)) throw std::runtime_error("short message");
  T v;
  std::memcpy(&v, in.data() + pos, sizeof v);
  pos += sizeof v;
  return v;
}

// The message header; the frame's bytes follow it on the wire.
std::string pack_header(const RawFrame& raw) {
  const DicomImage& d = raw.image;
  std::string out = "O";
  put(out, d.rows), put(out, d.cols), put(out, d.frames), put(out, d.samples_per_pixel);
  put(out, d.slope), put(out, d.intercept), put(out, static_cast<int>(d.has_window));
  put(out, d.window_center), put(out, d.window_width), put(out, static_cast<int>(raw.scalar));
  put(out, d.photometric.size()), out += d.photometric;
  put(out, raw.bytes.size());
  return out;
}

RawFrame unpack(std::string in) {
  size_t pos = 1;
  RawFrame raw;
  DicomImage& d = raw.image;
  d.rows = take<int64_t>(in, pos), d.cols = take<int64_t>(in, pos), d.frames = take<int64_t>(in, pos);
  d.samples_per_pixel = take<int>(in, pos);
  d.slope = take<double>(in, pos), d.intercept = take<double>(in, pos), d.has_window = take<int>(in, pos) != 0;
  d.window_center = take<double>(in, pos), d.window_width = take<double>(in, pos);
  raw.scalar = static_cast<Scalar>(take<int>(in, pos));
  const auto pi = take<size_t>(in, pos);
  if (in.size() - pos < pi) throw std::runtime_error("short message");
  d.photometric = in.substr(pos, pi), pos += pi;
  const auto nb = take<size_t>(in, pos);
  if (in.size() - pos != nb || nb != static_cast<size_t>(d.rows * d.cols * d.samples_per_pixel) * scalar_bytes(raw.scalar)) {
    throw std::runtime_error("bad message");
  }
  raw.offset = pos;
  raw.bytes = std::move(in);
  return raw;
}

// Whole reads and writes on the socket between afloc and its helper; false on end of file or error.
// send() rather than write() so that a peer gone away is an error, not a SIGPIPE ending the process.
bool send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w, n -= static_cast<size_t>(w);
  }
  return true;
}
bool read_all(int fd, char* p, size_t n) {
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r, n -= static_cast<size_t>(r);
  }
  return true;
}

std::string helper_program() {
  if (const char* env = std::getenv("AFLOC_DICOM_HELPER")) return env;
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  return (self.parent_path() / "afloc-dicom").string();
}

class Helper {
 public:
  Helper() = default;
  Helper(const Helper&) = delete;
  Helper& operator=(const Helper&) = delete;
  ~Helper() { stop(); }

  // The decoded frame; nullopt when there is no helper program (the caller decodes in-process).
  std::optional<RawFrame> decode(const std::string& path) {
    if (pid_ < 0 && !start()) return std::nullopt;
    drain_errors();
    const uint64_t n = path.size();
    if (!send_all(sock_, reinterpret_cast<const char*>(&n), sizeof n) || !send_all(sock_, path.data(), path.size())) {
      fail(path, "");
    }
    uint64_t len = 0;
    if (!receive(reinterpret_cast<char*>(&len), sizeof len, path)) fail(path, "");
    if (len > (uint64_t{1} << 36)) fail(path, "an answer of " + std::to_string(len) + " bytes");
    std::string msg(len, '\0');
    if (!receive(msg.data(), len, path)) fail(path, "");
    if (!msg.empty() && msg[0] == 'E') throw Error(msg.substr(1));
    try {
      return unpack(std::move(msg));
    } catch (const std::exception& e) {
      fail(path, e.what());
    }
    return std::nullopt;  // not reached
  }

 private:
  bool start() {
    const std::string exe = helper_program();
    if (exe.empty() || ::access(exe.c_str(), X_OK) != 0) {
      static std::once_flag once;
      std::call_once(once, [&] {
        log::warn("no DICOM helper program at '" + exe + "' (set AFLOC_DICOM_HELPER): decoding DICOM in this process, "
                  "where a corrupt file can abort it");
      });
      return false;
    }
    int sv[2], err[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw Error(std::string("socketpair: ") + std::strerror(errno));
    if (::pipe2(err, O_CLOEXEC) != 0) {
      ::close(sv[0]), ::close(sv[1]);
      throw Error(std::string("pipe: ") + std::strerror(errno));
    }
    // Frames of several MB cross in fewer, larger copies (the kernel caps these at its maximum).
    const int buffer = 1 << 22;
    ::setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    ::setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, sv[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, err[1], STDERR_FILENO);
    std::string arg0 = exe, arg1 = "--serve";
    char* argv[] = {arg0.data(), arg1.data(), nullptr};
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(sv[1]), ::close(err[1]);
    if (rc != 0) {
      ::close(sv[0]), ::close(err[0]);
      throw Error(exe + ": cannot start the DICOM helper (" + std::strerror(rc) + ")");
    }
    ::fcntl(err[0], F_SETFL, ::fcntl(err[0], F_GETFL) | O_NONBLOCK);
    pid_ = pid, sock_ = sv[0], err_ = err[0];
    return true;
  }
  // Closes the helper's descriptors and reaps it (it leaves when its input closes); its wait status.
  int stop() {
    if (pid_ < 0) return 0;
    ::close(sock_), ::close(err_);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = sock_ = err_ = -1;
    return status;
  }
  // What the helper wrote on stderr since the last call (GDCM's assertion when it aborted).
  std::string drain_errors() {
    std::string out;
    char buf[4096];
    ssize_t r;
    while ((r = ::read(err_, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(r));
    return out;
  }
  bool receive(char* p, size_t n, const std::string& path) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
    while (n > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        ::kill(pid_, SIGKILL);
        stop();
        throw Error(path + ": decoding the DICOM pixel data took over 5 minutes (stopped)");
      }
      pollfd pfd{sock_, POLLIN, 0};
      const int ready = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
      if (ready < 0 && errno != EINTR) return false;
      if (ready <= 0) continue;
      const ssize_t r = ::read(sock_, p, n);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      p += r, n -= static_cast<size_t>(r);
    }
    return true;
  }
  // The helper died (or spoke nonsense): reap it, report how, start a new one next time.
  [[noreturn]] void fail(const std::string& path, const std::string& what) {
    ::kill(pid_, SIGKILL);  // no-op when it is already gone
    std::string errors = drain_errors();
    const int status = stop();
    while (!errors.empty() && errors.back() == '\n') errors.pop_back();
    const size_t line = errors.rfind('\n');
    std::string why = line == std::string::npos ? errors : errors.substr(line + 1);
    if (why.size() > 300) why = why.substr(0, 300) + "...";
    if (why.empty()) why = what;
    const std::string how = WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status)) : "exit " + std::to_string(WEXITSTATUS(status));
    throw Error(path + ": GDCM stopped while decoding this DICOM (" + how + (why.empty() ? "" : ": " + why) +
                "); the file is corrupt or in a form GDCM cannot read");
  }

  pid_t pid_ = -1;
  int sock_ = -1, err_ = -1;
};

RawFrame decode_in_helper(const std::string& path) {
  thread_local Helper helper;
  if (auto raw = helper.decode(path)) return std::move(*raw);
  return decode_raw(path);
}
#else
RawFrame decode_in_helper(const std::string& path) { return decode_raw(path); }
#endif

}  // namespace

const std::vector<std::string>& dicom_voi_names() {
  static const std::vector<std::string> names = {"auto", "minmax", "authors"};
  return names;
}

DicomVoi parse_dicom_voi(const std::string& name) {
  const auto& names = dicom_voi_names();
  const auto it = std::find(names.begin(), names.end(), name);
  if (it == names.end()) throw Error("DICOM conversion '" + name + "': expected auto (window, else min-max), minmax or authors");
  return static_cast<DicomVoi>(it - names.begin());
}

bool is_dicom(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char buf[132];
  if (!in.read(buf, sizeof buf)) return false;
  return std::memcmp(buf + 128, "DICM", 4) == 0;
}

DicomImage read_dicom(const std::string& path, bool in_helper) {
  {
    const Bytes bytes = Bytes::file(path);
    const std::string cut = DicomWalk(bytes).problem();
    if (!cut.empty()) throw Error(path + ": DICOM file cut short or corrupt: " + cut);
  }
  return widen_frame(in_helper ? decode_in_helper(path) : decode_raw(path));
}

int serve_dicom_helper() {
#if defined(__linux__)
  // Requests on stdin and answers on stdout (both the caller's socket): [u64 length][path] in,
  // [u64 length][message] out. stderr is a pipe the caller reads after a failure; non-blocking, so
  // that a chatty decoder never waits on it.
  ::fcntl(STDERR_FILENO, F_SETFL, ::fcntl(STDERR_FILENO, F_GETFL) | O_NONBLOCK);
  for (;;) {
    uint64_t n = 0;
    if (!read_all(STDIN_FILENO, reinterpret_cast<char*>(&n), sizeof n)) return 0;
    if (n > (uint64_t{1} << 20)) return 2;
    std::string path(n, '\0');
    if (!read_all(STDIN_FILENO, path.data(), n)) return 0;
    std::string head, error;
    RawFrame raw;
    try {
      raw = decode_raw(path);
      head = pack_header(raw);
    } catch (const std::exception& e) {
      error = std::string("E") + e.what();
    }
    const std::string& first = error.empty() ? head : error;
    static const std::string kNothing;
    const std::string& rest = error.empty() ? raw.bytes : kNothing;
    const uint64_t len = first.size() + rest.size();
    if (!send_all(STDOUT_FILENO, reinterpret_cast<const char*>(&len), sizeof len) ||
        !send_all(STDOUT_FILENO, first.data(), first.size()) || !send_all(STDOUT_FILENO, rest.data(), rest.size())) {
      return 0;
    }
  }
#else
  return 2;
#endif
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
