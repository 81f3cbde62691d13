#pragma once
/// Zero-shot localization heatmaps (SPEC §4): raw dot product of the deep regions with the prompt's
/// report vector, Gaussian smoothing (scipy.ndimage.gaussian_filter, mode reflect, truncate 4),
/// bilinear upsampling (align_corners=False), optional NaN margin, min-max to [-1, 1].
#include <torch/torch.h>

#include <string>
#include <vector>

namespace afloc::infer {

struct HeatmapOptions {
  double sigma = -1;          ///< Gaussian sigma in feature cells; < 0 = 1.5 * side / 19 (1.5 at 19x19), 0 = none
  double truncate = 4.0;      ///< kernel radius = int(truncate * sigma + 0.5)
  int64_t margin = -1;        ///< NaN border in output pixels; < 0 = round(14 * size / 224); 0 = none
  std::string interpolation = "bilinear";  ///< upsampling: bilinear (authors'), bicubic or nearest
  std::string normalization = "minmax";    ///< minmax: [-1, 1] (authors' mode 0); minmax01: [0, 1]; none
};

/// Error naming the option for unknown interpolation/normalization names or negative values.
void validate(const HeatmapOptions& options);

/// The contrast reading (not in the authors' protocol; `--contrast W`): each query minus W times the
/// mean of the reference queries, queries (P, D) and references (R, D) -> (P, D), 0 < W <= 1. Since
/// the map is linear in the query, a prompt's map becomes its raw map minus W times the references'
/// mean raw map. What the prompts share (a template's words, [CLS] and [SEP], whose summed vectors
/// make up most of a short prompt's report vector) is taken out of the maps, wholly at W = 1 (then
/// the low-temperature limit of a per-region softmax over the prompts, as the authors' attention
/// takes one over a caption's units), by half at 0.5. Errors for W outside (0, 1] and for fewer than
/// 2 references (the map of a prompt against itself alone is zero at W = 1).
torch::Tensor contrast_queries(const torch::Tensor& queries, const torch::Tensor& references, double weight);
/// Error naming the reading ("contrast reading", "centred reading") unless 0 < weight <= 1: the
/// weights of both readings (contrast_queries and centre_maps check theirs), for callers that
/// refuse a weight before they read any film.
void check_reading_weight(const std::string& reading, double weight);
/// The two readings' weights as options give them (LocalizeOptions, eval::LocEvalOptions): 0 is
/// off, any other value outside (0, 1] (a negative one too) an error naming its reading.
void check_reading_weights(double contrast, double centre);

/// sim = regions . query: regions (D, h, w), query (D) -> (h, w).
torch::Tensor similarity_map(const torch::Tensor& regions, const torch::Tensor& query);
/// scipy.ndimage.gaussian_filter(map, sigma) with mode "reflect" (edge sample repeated), in double
/// precision, returned in the input's dtype. map: (h, w).
torch::Tensor gaussian_smooth(const torch::Tensor& map, double sigma, double truncate = 4.0);
/// Resize of (h, w) to (height, width): bilinear/bicubic with align_corners=False, or nearest.
torch::Tensor upsample(const torch::Tensor& map, int64_t height, int64_t width, const std::string& mode = "bilinear");
/// NaN outside the central region (margin pixels on each side), then min-max over non-NaN pixels to
/// [-1, 1] (the authors' set_margin + norm_heatmap(mode=0)); a constant map is returned unchanged.
torch::Tensor normalize(const torch::Tensor& map, int64_t margin, const std::string& mode = "minmax");
/// The NaN border in pixels for a square output of side `size`: options.margin, or by default
/// 14 px at 224 scaled to the size.
int64_t margin_pixels(const HeatmapOptions& options, int64_t size);
/// The whole path for a square output of side `size`: (h, w) raw map -> (size, size) in [-1, 1].
torch::Tensor heatmap(const torch::Tensor& sim, int64_t size, const HeatmapOptions& options = {});
/// An ensemble's heatmap of one image and prompt: the mean of heatmap(sim) over the models' raw
/// maps (any sides; each normalised before the average). One map gives exactly heatmap(sim).
torch::Tensor mean_heatmap(const std::vector<torch::Tensor>& sims, int64_t size, const HeatmapOptions& options = {});

}  // namespace afloc::infer
