#include "afloc/data/rle.h"

#include <sstream>

#include "afloc/common/error.h"

namespace afloc::data {

int64_t Mask::count() const {
  int64_t n = 0;
  for (uint8_t v : pixels) n += v != 0;
  return n;
}

std::vector<uint32_t> coco_counts(const Mask& m) {
  std::vector<uint32_t> counts;
  uint8_t current = 0;
  uint32_t run = 0;
  for (int64_t x = 0; x < m.width; ++x) {
    for (int64_t y = 0; y < m.height; ++y) {
      const uint8_t v = m.pixels[static_cast<size_t>(y * m.width + x)] != 0;
      if (v != current) {
        counts.push_back(run);
        run = 0;
        current = v;
      }
      ++run;
    }
  }
  counts.push_back(run);
  return counts;
}

Mask coco_decode_counts(const std::vector<uint32_t>& counts, int64_t height, int64_t width) {
  Mask m;
  m.height = height;
  m.width = width;
  m.pixels.assign(static_cast<size_t>(height * width), 0);
  int64_t pos = 0;
  uint8_t v = 0;
  const int64_t total = height * width;
  for (uint32_t c : counts) {
    if (pos + c > total) throw Error("RLE runs exceed the mask size " + std::to_string(height) + "x" + std::to_string(width));
    if (v) {
      for (int64_t k = pos; k < pos + c; ++k) {
        const int64_t x = k / height, y = k % height;  // column-major
        m.pixels[static_cast<size_t>(y * width + x)] = 1;
      }
    }
    pos += c;
    v = !v;
  }
  if (pos != total) {
    throw Error("RLE runs cover " + std::to_string(pos) + " pixels, the mask has " + std::to_string(total));
  }
  return m;
}

// pycocotools maskApi.c rleToString: each count (after the first two, as a difference from the
// count two places back) in 5-bit groups with a continuation bit, offset by 48.
std::string coco_counts_to_string(const std::vector<uint32_t>& counts) {
  std::string s;
  for (size_t i = 0; i < counts.size(); ++i) {
    int64_t x = counts[i];
    if (i > 2) x -= static_cast<int64_t>(counts[i - 2]);
    bool more = true;
    while (more) {
      int64_t c = x & 0x1f;
      x >>= 5;  // arithmetic shift, as in C on a signed long
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      s += static_cast<char>(c + 48);
    }
  }
  return s;
}

std::vector<uint32_t> coco_counts_from_string(const std::string& s, const std::string& origin) {
  std::vector<uint32_t> counts;
  size_t p = 0;
  while (p < s.size()) {
    int64_t x = 0;
    int k = 0;
    bool more = true;
    while (more) {
      if (p >= s.size()) throw Error(origin + ": truncated COCO RLE string");
      const int64_t c = static_cast<int64_t>(static_cast<unsigned char>(s[p])) - 48;
      if (c < 0 || c > 63) throw Error(origin + ": invalid character in COCO RLE string at " + std::to_string(p));
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) != 0;
      ++p;
      ++k;
      if (k > 12) throw Error(origin + ": COCO RLE count too long at " + std::to_string(p));
      if (!more && (c & 0x10)) x |= static_cast<int64_t>(-1) * (int64_t{1} << (5 * k));
    }
    if (counts.size() > 2) x += counts[counts.size() - 2];
    if (x < 0 || x > UINT32_MAX) throw Error(origin + ": negative or huge run in COCO RLE string");
    counts.push_back(static_cast<uint32_t>(x));
  }
  return counts;
}

std::string coco_encode(const Mask& mask) { return coco_counts_to_string(coco_counts(mask)); }

Mask coco_decode(const std::string& counts, int64_t height, int64_t width, const std::string& origin) {
  return with_context(origin, [&] { return coco_decode_counts(coco_counts_from_string(counts, origin), height, width); });
}

std::string siim_encode(const Mask& m) {
  std::string out;
  int64_t last_end = 0;  // 0-based index one past the previous run
  int64_t k = 0;
  const int64_t total = m.height * m.width;
  while (k < total) {
    const auto at = [&](int64_t i) { return m.pixels[static_cast<size_t>((i % m.height) * m.width + i / m.height)] != 0; };
    if (!at(k)) {
      ++k;
      continue;
    }
    int64_t len = 0;
    const int64_t start = k;
    while (k < total && at(k)) {
      ++len;
      ++k;
    }
    out += (out.empty() ? "" : " ") + std::to_string(start - last_end) + " " + std::to_string(len);
    last_end = start + len;
  }
  return out.empty() ? "-1" : out;
}

Mask siim_decode(const std::string& rle, int64_t height, int64_t width, const std::string& origin) {
  Mask m;
  m.height = height;
  m.width = width;
  m.pixels.assign(static_cast<size_t>(height * width), 0);
  std::istringstream in(rle);
  std::vector<int64_t> v;
  std::string tok;
  while (in >> tok) {
    try {
      size_t used = 0;
      v.push_back(std::stoll(tok, &used));
      if (used != tok.size()) throw std::invalid_argument(tok);
    } catch (const std::exception&) {
      throw Error(origin + ": not an integer in SIIM RLE: '" + tok + "'");
    }
  }
  if (v.empty() || (v.size() == 1 && v[0] == -1)) return m;
  if (v.size() % 2 != 0) throw Error(origin + ": SIIM RLE has an odd number of values (" + std::to_string(v.size()) + ")");
  // The authors' rle2mask: start = current_position + start; current_position = start + length,
  // with starts counted from 0 after the previous run's end (the first start is an offset too).
  int64_t pos = 0;
  const int64_t total = height * width;
  for (size_t i = 0; i < v.size(); i += 2) {
    const int64_t start = pos + v[i], len = v[i + 1];
    if (v[i] < 0 || len < 0 || start + len > total) {
      throw Error(origin + ": SIIM RLE run " + std::to_string(i / 2) + " (" + std::to_string(v[i]) + " " +
                  std::to_string(len) + ") leaves the " + std::to_string(height) + "x" + std::to_string(width) + " mask");
    }
    for (int64_t k = start; k < start + len; ++k) m.pixels[static_cast<size_t>((k % height) * width + k / height)] = 1;
    pos = start + len;
  }
  return m;
}

}  // namespace afloc::data
