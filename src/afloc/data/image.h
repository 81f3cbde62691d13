#pragma once
/// Image reading and AFLoc preprocessing (SPEC §4): grayscale, area-interpolation resize of the long
/// side, centred zero pad (floor/ceil), replicate to 3 channels, x/255 then (x-0.5)/0.5.
#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "afloc/data/dicom.h"

namespace afloc::data {

/// An 8-bit grayscale image, row-major (H, W).
struct Gray8 {
  int64_t height = 0, width = 0;
  std::vector<uint8_t> pixels;
};

/// Limits on what is decoded (a hospital folder may hold anything).
struct ImageReadOptions {
  int64_t max_pixels = int64_t{1} << 28;  ///< refuse images with more pixels (268 M) than this
  DicomVoi dicom_voi = DicomVoi::kAuto;   ///< how DICOM stored values become 8 bits
};

/// Reads PNG, JPEG (8- or 16-bit, grey or colour) or DICOM (recognised by its "DICM" preamble; first
/// frame, see read_dicom) as 8-bit grey. 8-bit files give exactly what the
/// authors' `cv2.imread(path, 0)` gives; 16-bit files are scaled min-max to 0..255. Error naming the
/// file when it is missing, not a decodable image, or too large.
Gray8 read_gray8(const std::string& path, const ImageReadOptions& options = {});

/// The authors' `_resize_img`: resize with area interpolation so the long side is `size` (the short
/// side becomes int(short * size / long)), then zero-pad the short side centred (floor before,
/// ceil after). Bit-exact with OpenCV INTER_AREA.
Gray8 resize_pad(const Gray8& image, int64_t size);

/// A ground-truth mask (any non-zero = inside) brought to the model's square geometry the way the
/// authors' loaders do it: float32, resize_pad geometry with INTER_AREA, then >= 1e-5 -> 0/1.
Gray8 resize_mask(const Gray8& mask, int64_t size);

/// (3, size, size) float in [-1, 1]: resize_pad, replicate to 3 channels, (x/255 - 0.5)/0.5.
torch::Tensor preprocess(const Gray8& image, int64_t size);

/// Gray8 <-> (H, W) uint8 tensor.
torch::Tensor to_tensor(const Gray8& image);
Gray8 from_tensor(const torch::Tensor& hw_uint8);

}  // namespace afloc::data
