#pragma once
/// Zero-shot localization evaluation of a trained model on ground-truth masks or boxes: heatmaps for
/// "Findings suggesting {finding}." against each finding's mask (or boxes), per category and macro, next to a
/// centre-prior baseline (a fixed Gaussian in the middle of the chest) run through the same protocol.
#include <cmath>
#include <string>
#include <vector>

#include "afloc/eval/classification_eval.h"
#include "afloc/eval/metrics.h"
#include "afloc/infer/heatmap.h"
#include "afloc/model/afloc_model.h"

namespace afloc::eval {

/// One finding of a ground-truth image: its pixel mask and its bounding boxes.
struct GtInstance {
  std::string category;
  std::string mask;  ///< path of a PNG mask (any non-zero = inside)
  /// Boxes (x, y, w, h) in the film's pixels, as MS-CXR's CSV gives them; empty when the ground
  /// truth has none (then LocEvalOptions::truth "boxes" is an error naming the image).
  std::vector<std::vector<double>> boxes;
};

/// One image with its findings.
struct GtImage {
  std::string id, image;
  std::vector<GtInstance> instances;
};

/// Reads a phantom world's ground_truth/instances.jsonl (paths relative to the world root, boxes from
/// `boxes_xywh`), keeping the given splits ("test", "unseen"). Error naming the file and line for
/// malformed lines.
std::vector<GtImage> read_phantom_ground_truth(const std::string& world_dir, const std::vector<std::string>& splits);

/// What a heatmap is scored against (LocEvalOptions::truth).
enum class Truth {
  kMasks,  ///< the findings' pixel masks (SIIM, CheXlocalize, COVID-Rural are scored so)
  /// the findings' bounding boxes, mapped into the resize-pad square (box_mapping) and summed
  /// (add_box, the authors' box2mask: overlaps count 2), as MS-CXR and RSNA are scored
  kBoxes,
};
/// "masks", "boxes" (the CLI's names); truth_from_name throws Error naming other values.
const std::vector<std::string>& truth_names();
Truth truth_from_name(const std::string& name);
std::string truth_name(Truth t);

struct LocEvalOptions {
  std::string prompt_template = "Findings suggesting {finding}.";
  /// G of every metric (hit, IoU, Dice, CNR, ceiling, miss distance), for the model and the
  /// centre prior alike. Several instances of one category in an image form one G.
  Truth truth = Truth::kMasks;
  int64_t eval_size = 224;  ///< heatmaps and masks are compared at this square size (SPEC §4)
  infer::HeatmapOptions heatmap;
  int64_t batch = 16;
  std::string overlays_dir;  ///< write PNG overlays of the first cases here ("" = none)
  int64_t n_overlays = 24;
  bool progress = true;
  /// Also zero-shot classification of every image for the categories present in the ground
  /// truth (the authors' chest X-ray prompt sets, binary), scored by AUROC.
  bool classify = true;
  std::string prompt_cache_dir;  ///< on-disk prompt cache ("" = memory only)
  /// 95% confidence intervals from this many bootstrap resamples of the cases (SPEC §5: 1000;
  /// 0 = none), drawn with this seed.
  int64_t bootstrap = 1000;
  uint64_t bootstrap_seed = 0;
  /// The contrast reading (infer::contrast_queries; not in the authors' protocol) when not 0: each
  /// finding's map minus this weight, in (0, 1], times the mean map of the evaluated findings'
  /// prompts (2 or more findings needed). Other values are errors.
  double contrast = 0;
  /// The centred reading (infer::centre_maps; not in the authors' protocol) when not 0: every map
  /// minus this weight, in (0, 1], times its mean over `centre_films` (reference films, e.g. the
  /// world's training films; needed then). Other values are errors.
  double centre = 0;
  std::vector<std::string> centre_films;
};

/// Bootstrap intervals of one row of the table.
struct RowIntervals {
  Interval hit_rate{NAN, NAN}, iou{NAN, NAN}, cnr{NAN, NAN};
};

struct CaseResult {
  std::string id, category;
  double iou, dice, cnr, baseline_iou, baseline_cnr;
  bool hit, baseline_hit;
  bool hit_ceiling;  ///< G holds a pixel the heatmap's arg-max can reach (peak_pixels)
  int64_t peak_x, peak_y;  ///< the heatmap's arg-max (pixels at the evaluation size; -1 when none)
  double peak_distance;    ///< pixels from the arg-max to G (0 = hit; eval::peak_distance)
};

struct LocEvalResult {
  Truth truth = Truth::kMasks;  ///< what the heatmaps were scored against
  std::vector<std::pair<std::string, LocalizationMetric::Summary>> model, baseline;  ///< per category
  LocalizationMetric::Summary model_macro, baseline_macro;
  /// Pointing-game ceiling of the map's resolution per category (same order as `model`) and macro.
  std::vector<double> hit_ceiling;
  double hit_ceiling_macro = 0;
  int64_t map_side = 0;  ///< side of the deep map the heatmaps come from (0: an ensemble of several sides)
  bool dense_map = false;  ///< the map was shift-and-stitched (model::AflocConfig::dense_map)
  std::string heatmap_levels = "deep";  ///< the maps read (model::AflocConfig::heatmap_levels; "mixed" across models)
  int64_t n_models = 1;    ///< models whose heatmaps and probabilities were averaged
  double contrast = 0;              ///< the contrast reading's weight (0: the plain reading)
  int64_t contrast_references = 0;  ///< prompts of its mean
  double centre = 0;                ///< the centred reading's weight (0: off)
  int64_t centre_films = 0;         ///< reference films of its mean
  std::vector<CaseResult> cases;
  /// 95% bootstrap intervals (LocEvalOptions::bootstrap resamples; empty / NaN when 0): per
  /// category (same order as `model`), of the macro means, and of the macro IoU over the centre
  /// prior's macro IoU (both from the same resamples).
  int64_t bootstrap = 0;
  std::vector<RowIntervals> model_ci;
  RowIntervals model_macro_ci;
  Interval iou_over_baseline_ci{NAN, NAN};
  /// Classification (when LocEvalOptions::classify): classes, per-image probabilities and labels
  /// (1 = the image holds the finding), the summary.
  std::vector<std::string> class_names, image_ids;
  std::vector<std::vector<double>> probabilities;
  std::vector<std::vector<int>> labels;
  ClassificationSummary classification;
};

/// The prompt for a category ("Pleural Effusion" -> "Findings suggesting pleural effusion."); a
/// template without {finding} is used as is for every category (a prompt-independent control).
std::string prompt_for(const std::string& template_, const std::string& category);

/// The pixels a heatmap's arg-max can land on, as (rows, cols) of the (size, size) heatmap. A bilinear
/// upsampling (align_corners=False) of an (h, w) map is linear between the cell centres, so its
/// arg-max lies on a pixel next to a cell centre (floor or ceil of (i + 0.5) size / n - 0.5), moved
/// inside the NaN margin, or on the first valid pixel when the map is flat beyond the outer centres.
/// A mask holding none of these pixels cannot be hit by any model whose map has this side: the
/// pointing game's ceiling at this resolution. Empty for other interpolations (no ceiling).
std::pair<std::vector<int64_t>, std::vector<int64_t>> peak_pixels(int64_t h, int64_t w, int64_t size,
                                                                  const infer::HeatmapOptions& options);

/// The centre prior: a Gaussian at (0.5, 0.45) of the image with sigma 0.2 of its side, (size, size).
torch::Tensor centre_prior(int64_t size);

LocEvalResult evaluate_localization(model::AflocModel& net, const std::vector<GtImage>& images,
                                    const LocEvalOptions& options);
/// An ensemble: every model's heatmap (normalised as SPEC §4) averaged per image and prompt, and
/// their classification probabilities averaged. The models may differ in anything, the deep map's
/// side included (then no hit ceiling); one model gives exactly the single-model result.
LocEvalResult evaluate_localization(std::vector<model::AflocModel>& nets, const std::vector<GtImage>& images,
                                    const LocEvalOptions& options);

/// Writes metrics.json, cases.csv, table.txt (and classification.csv) into out_dir; returns the
/// table text.
std::string write_localization_report(const LocEvalResult& r, const std::string& out_dir);

}  // namespace afloc::eval
