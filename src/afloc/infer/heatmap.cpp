#include "afloc/infer/heatmap.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

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

// One axis of scipy's correlate1d on a row-major (h, w) double buffer, taps summed in order. Plain
// loops: the map is 19 x 19, where per-tap tensor ops cost 40x more than the arithmetic.
std::vector<double> smooth_axis(const std::vector<double>& x, int64_t h, int64_t w, const std::vector<double>& taps, int axis) {
  const int64_t r = static_cast<int64_t>(taps.size() / 2), n = axis == 0 ? h : w;
  std::vector<double> out(x.size(), 0.0);
  for (int64_t k = -r; k <= r; ++k) {
    const double t = taps[static_cast<size_t>(k + r)];
    for (int64_t y = 0; y < h; ++y)
      for (int64_t c = 0; c < w; ++c) {
        const int64_t src = axis == 0 ? reflect_index(y + k, n) * w + c : y * w + reflect_index(c + k, n);
        out[static_cast<size_t>(y * w + c)] += x[static_cast<size_t>(src)] * t;
      }
  }
  return out;
}

}  // namespace

void check_reading_weight(const std::string& reading, double weight) {
  if (!(weight > 0 && weight <= 1)) {
    std::ostringstream text;
    text << reading << ": weight " << weight << " is not in (0, 1]";
    throw Error(text.str());
  }
}

void check_reading_weights(double contrast, double centre) {
  if (contrast != 0) check_reading_weight("contrast reading", contrast);
  if (centre != 0) check_reading_weight("centred reading", centre);
}

torch::Tensor contrast_queries(const torch::Tensor& queries, const torch::Tensor& references, double weight) {
  TORCH_CHECK(queries.dim() == 2 && references.dim() == 2 && queries.size(1) == references.size(1),
              "contrast_queries: queries (P, D) and references (R, D) expected");
  if (references.size(0) < 2) {
    throw Error("contrast reading: " + std::to_string(references.size(0)) +
                " reference prompt(s); it needs at least 2 (a prompt against itself alone gives a zero map)");
  }
  check_reading_weight("contrast reading", weight);
  return queries - weight * references.mean(0, /*keepdim=*/true);
}

torch::Tensor similarity_map(const torch::Tensor& regions, const torch::Tensor& query) {
  TORCH_CHECK(regions.dim() == 3 && query.dim() == 1 && regions.size(0) == query.size(0),
              "similarity_map: regions (D, h, w) and query (D) expected");
  // (D, h, w) x (D) -> (h, w)
  return torch::einsum("dhw,d->hw", {regions, query});
}

torch::Tensor gaussian_smooth(const torch::Tensor& map, double sigma, double truncate) {
  TORCH_CHECK(map.dim() == 2, "gaussian_smooth: (h, w) expected");
  TORCH_CHECK(sigma >= 0, "gaussian_smooth: sigma must be >= 0");
  if (sigma == 0) return map.clone();  // as scipy: no smoothing
  const auto radius = static_cast<int64_t>(truncate * sigma + 0.5);
  std::vector<double> w(static_cast<size_t>(2 * radius + 1));
  double sum = 0;
  for (int64_t k = -radius; k <= radius; ++k) {
    const double v = std::exp(-0.5 / (sigma * sigma) * static_cast<double>(k * k));
    w[static_cast<size_t>(k + radius)] = v;
    sum += v;
  }
  for (auto& v : w) v /= sum;
  const torch::Tensor x = map.to(torch::kCPU, torch::kDouble).contiguous();
  const int64_t h = x.size(0), wd = x.size(1);
  const std::vector<double> in(x.data_ptr<double>(), x.data_ptr<double>() + x.numel());
  // scipy filters axis 0 then axis 1.
  std::vector<double> out = smooth_axis(smooth_axis(in, h, wd, w, 0), h, wd, w, 1);
  return torch::from_blob(out.data(), {h, wd}, torch::kDouble).clone().to(map.device(), map.scalar_type());
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
  TORCH_CHECK(map.dim() == 2, "normalize: (h, w) expected");
  const int64_t H = map.size(0), W = map.size(1);
  if (margin > 0) TORCH_CHECK(2 * margin < H && 2 * margin < W, "normalize: margin too large for the map");
  // Plain loops over a float copy (masked tensor ops cost ~20x more on a 224 x 224 map); the
  // arithmetic is the authors' in the map's float32: (x - min) / (max - min) * 2 - 1.
  torch::Tensor h = map.to(torch::kCPU, torch::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous();
  float* p = h.data_ptr<float>();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  if (margin > 0)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        if (y < margin || y >= H - margin || x < margin || x >= W - margin) p[y * W + x] = nan;
  if (mode != "none") {
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    for (int64_t i = 0; i < H * W; ++i)
      if (!std::isnan(p[i])) {
        lo = std::min(lo, p[i]);
        hi = std::max(hi, p[i]);
      }
    const float range = hi - lo;
    if (lo <= hi && range != 0) {
      const bool to01 = mode == "minmax01";
      for (int64_t i = 0; i < H * W; ++i)
        if (!std::isnan(p[i])) {
          const float n = (p[i] - lo) / range;
          p[i] = to01 ? n : n * 2 - 1;
        }
    }
  }
  return h.to(map.device(), map.scalar_type());
}

int64_t margin_pixels(const HeatmapOptions& o, int64_t size) {
  return o.margin >= 0 ? o.margin : static_cast<int64_t>(std::lround(14.0 * static_cast<double>(size) / 224.0));
}

torch::Tensor heatmap(const torch::Tensor& sim, int64_t size, const HeatmapOptions& o) {
  const double sigma = o.sigma >= 0 ? o.sigma : 1.5 * static_cast<double>(sim.size(0)) / 19.0;
  return normalize(upsample(gaussian_smooth(sim, sigma, o.truncate), size, size, o.interpolation),
                   margin_pixels(o, size), o.normalization);
}

torch::Tensor mean_heatmap(const std::vector<torch::Tensor>& sims, int64_t size, const HeatmapOptions& o) {
  TORCH_CHECK(!sims.empty(), "mean_heatmap: no map");
  torch::Tensor sum = heatmap(sims[0], size, o);
  for (size_t k = 1; k < sims.size(); ++k) sum = sum + heatmap(sims[k], size, o);
  return sims.size() > 1 ? sum / static_cast<double>(sims.size()) : sum;
}

}  // namespace afloc::infer
