#include "afloc/infer/heatmap.h"

#include <cmath>

#include "afloc/common/error.h"

namespace afloc::infer {
namespace {

// scipy.ndimage "reflect": (d c b a | a b c d | d c b a), repeated for offsets beyond the size.
int64_t reflect_index(int64_t i, int64_t n) {
  if (n == 1) return 0;
  const int64_t period = 2 * n;
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - 1 - i;
}

torch::Tensor smooth_axis(const torch::Tensor& x, const std::vector<double>& w, int64_t axis) {
  const int64_t n = x.size(axis), r = static_cast<int64_t>(w.size() / 2);
  torch::Tensor out = torch::zeros_like(x);
  for (int64_t k = -r; k <= r; ++k) {
    std::vector<int64_t> idx(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idx[static_cast<size_t>(i)] = reflect_index(i + k, n);
    const auto index = torch::tensor(idx, torch::TensorOptions().dtype(torch::kLong).device(x.device()));
    out.add_(x.index_select(axis, index), w[static_cast<size_t>(k + r)]);
  }
  return out;
}

}  // namespace

torch::Tensor similarity_map(const torch::Tensor& regions, const torch::Tensor& query) {
  TORCH_CHECK(regions.dim() == 3 && query.dim() == 1 && regions.size(0) == query.size(0),
              "similarity_map: regions (D, h, w) and query (D) expected");
  // (D, h, w) x (D) -> (h, w)
  return torch::einsum("dhw,d->hw", {regions, query});
}

torch::Tensor gaussian_smooth(const torch::Tensor& map, double sigma, double truncate) {
  TORCH_CHECK(map.dim() == 2, "gaussian_smooth: (h, w) expected");
  TORCH_CHECK(sigma > 0, "gaussian_smooth: sigma must be > 0");
  const auto radius = static_cast<int64_t>(truncate * sigma + 0.5);
  std::vector<double> w(static_cast<size_t>(2 * radius + 1));
  double sum = 0;
  for (int64_t k = -radius; k <= radius; ++k) {
    const double v = std::exp(-0.5 / (sigma * sigma) * static_cast<double>(k * k));
    w[static_cast<size_t>(k + radius)] = v;
    sum += v;
  }
  for (auto& v : w) v /= sum;
  const torch::Tensor x = map.to(torch::kDouble);
  // scipy filters axis 0 then axis 1.
  return smooth_axis(smooth_axis(x, w, 0), w, 1).to(map.scalar_type());
}

void validate(const HeatmapOptions& o) {
  if (o.interpolation != "bilinear" && o.interpolation != "bicubic" && o.interpolation != "nearest") {
    throw Error("heatmap interpolation '" + o.interpolation + "': expected bilinear, bicubic or nearest");
  }
  if (o.normalization != "minmax" && o.normalization != "minmax01" && o.normalization != "none") {
    throw Error("heatmap normalization '" + o.normalization + "': expected minmax, minmax01 or none");
  }
  if (o.truncate <= 0) throw Error("heatmap truncate " + std::to_string(o.truncate) + ": must be > 0");
}

torch::Tensor upsample(const torch::Tensor& map, int64_t height, int64_t width, const std::string& mode) {
  namespace F = torch::nn::functional;
  auto opts = F::InterpolateFuncOptions().size(std::vector<int64_t>{height, width});
  if (mode == "nearest") {
    opts.mode(torch::kNearest);
  } else {
    if (mode == "bicubic") {
      opts.mode(torch::kBicubic);
    } else {
      opts.mode(torch::kBilinear);
    }
    opts.align_corners(false);
  }
  return F::interpolate(map.unsqueeze(0).unsqueeze(0), opts).squeeze(0).squeeze(0);
}

torch::Tensor normalize(const torch::Tensor& map, int64_t margin, const std::string& mode) {
  torch::Tensor h = map.clone();
  if (margin > 0) {
    const int64_t H = h.size(0), W = h.size(1);
    TORCH_CHECK(2 * margin < H && 2 * margin < W, "normalize: margin too large for the map");
    h.slice(0, 0, margin).fill_(NAN);
    h.slice(0, H - margin, H).fill_(NAN);
    h.slice(1, 0, margin).fill_(NAN);
    h.slice(1, W - margin, W).fill_(NAN);
  }
  if (mode == "none") return h;
  const torch::Tensor valid = ~torch::isnan(h);
  const torch::Tensor v = h.masked_select(valid);
  if (v.numel() == 0) return h;
  const torch::Tensor lo = v.min(), range = v.max() - lo;
  if (range.item<double>() == 0) return h;
  // The authors compute (x - min) / (max - min) * 2 - 1 in the map's dtype.
  torch::Tensor n = (v - lo) / range;
  if (mode != "minmax01") n = n * 2 - 1;
  h.masked_scatter_(valid, n);
  return h;
}

torch::Tensor heatmap(const torch::Tensor& sim, int64_t size, const HeatmapOptions& o) {
  const double sigma = o.sigma > 0 ? o.sigma : 1.5 * static_cast<double>(sim.size(0)) / 19.0;
  const int64_t margin = o.margin >= 0 ? o.margin : static_cast<int64_t>(std::lround(14.0 * static_cast<double>(size) / 224.0));
  return normalize(upsample(gaussian_smooth(sim, sigma, o.truncate), size, size, o.interpolation), margin, o.normalization);
}

}  // namespace afloc::infer
