#pragma once
/// Zero-shot localization for users' images: batched image encoding, prompt embeddings computed
/// once, SPEC §4 heatmaps, binary masks at thresholds, connected-component boxes with scores, and
/// the files a user opens (heatmap .npy/.png, overlay .png, masks, one JSON record per image and
/// prompt).
#include <torch/torch.h>

#include <array>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "afloc/data/image.h"
#include "afloc/infer/classifier.h"
#include "afloc/infer/heatmap.h"
#include "afloc/infer/prompt_encoder.h"
#include "afloc/model/afloc_model.h"

namespace afloc::infer {

struct LocalizeOptions {
  int64_t size = 224;  ///< output side (SPEC §4: 224); images are shown resize-padded to it
  HeatmapOptions heatmap;
  std::vector<double> thresholds = {0.1, 0.2, 0.3, 0.4, 0.5};  ///< masks: heatmap > t
  int64_t batch = 16;
  int64_t min_region_pixels = 1;  ///< smaller connected components are not reported
  double present_threshold = 0.5;  ///< a finding is present when its probability exceeds this
  bool all = false;                ///< regions for every prompt, present or not
  /// The contrast reading (contrast_queries; not in the authors' protocol) when not 0: each
  /// prompt's map minus this weight, in (0, 1] (others are errors), times the mean map of the
  /// references, which are the run's prompts followed by `contrast_prompts` (references only, not
  /// mapped). Presence is unchanged.
  double contrast = 0;
  std::vector<std::string> contrast_prompts;
  /// The centred reading (centre_maps; not in the authors' protocol) when not 0: every map minus
  /// this weight, in (0, 1] (others are errors), times its mean over reference films
  /// (Localizer::set_centre, which must then be called).
  double centre = 0;
};

/// The centred reading's reference, per model: the mean over `films` of each map its heatmaps read
/// (model::heatmap_maps: the deep map, and the shallow one for heatmap_levels both/shallow), one
/// (D, h, w) tensor per level on the model's device. Films are read `batch` at a time, each once
/// for all the models, so any number of full-size films fits in memory. Error naming the file for
/// an unreadable film, and for none.
std::vector<std::vector<torch::Tensor>> mean_maps(std::vector<model::AflocModel>& nets, const std::vector<std::string>& films,
                                                  int64_t batch = 16, const data::ImageReadOptions& read = {},
                                                  bool progress = false);
/// The same for one model.
std::vector<torch::Tensor> mean_maps(model::AflocModel& net, const std::vector<std::string>& films, int64_t batch = 16,
                                     const data::ImageReadOptions& read = {}, bool progress = false);

/// The centred reading (not in the authors' protocol; `--centre W`): levels[j] (B, D, h, w) minus
/// weight times means[j] (D, h, w), in place. Since a prompt's raw map is linear in the regions, its
/// map becomes its raw map minus W times its mean raw map over the reference films: what a prompt
/// lights in every film (anatomy the films share, a film's corners) is taken out, wholly at W = 1,
/// by half at 0.5, and what this film has that the population has not stays. Errors for W outside
/// (0, 1] and for means that do not match the levels in number or shape.
void centre_maps(std::vector<torch::Tensor>& levels, const std::vector<torch::Tensor>& means, double weight);

/// One connected region of (heatmap > threshold).
struct Region {
  double threshold = 0;
  int64_t x = 0, y = 0, w = 0, h = 0;  ///< box in output pixels
  int64_t pixels = 0;
  double score_max = 0, score_mean = 0;  ///< heatmap values inside the region
};

struct Localization {
  std::string image, prompt, cleaned_prompt;
  torch::Tensor heatmap;  ///< (size, size) float, NaN in the margin
  double peak = 0;
  int64_t peak_x = 0, peak_y = 0;
  /// Presence (when a presence head was given): the binary zero-shot probability and its verdict;
  /// regions are found only for present findings unless LocalizeOptions::all.
  double probability = std::numeric_limits<double>::quiet_NaN();
  bool present = true;
  std::vector<Region> regions;
};

class Localizer {
 public:
  /// Prompt vectors come from (and are cached by) `prompts`.
  Localizer(model::AflocModel& net, LocalizeOptions options, PromptEncoder& prompts);
  /// An ensemble: each model with its own prompt encoder (its text encoder and vocabulary). Every
  /// (image, prompt) heatmap is the mean of the models' heatmaps, each computed and normalised as
  /// SPEC §4 at the output size (so the models may differ in input size and map side), and the
  /// presence probability the mean of theirs. One model gives exactly the single-model result.
  Localizer(std::vector<model::AflocModel> nets, LocalizeOptions options, std::vector<PromptEncoder*> prompts);
  /// Heatmaps for every (image, prompt), image-major; images are 8-bit grey of any size. With a
  /// presence head (binary mode, one class per prompt, in order) each result carries its
  /// probability, from the same forward pass.
  std::vector<Localization> run(const std::vector<data::Gray8>& images, const std::vector<std::string>& names,
                                const std::vector<std::string>& prompts, const ClassHead* presence = nullptr);
  /// The same for an ensemble, with one presence head per model (empty = none).
  std::vector<Localization> run(const std::vector<data::Gray8>& images, const std::vector<std::string>& names,
                                const std::vector<std::string>& prompts, const std::vector<ClassHead>& presence);
  const LocalizeOptions& options() const { return o_; }
  /// The centred reading's reference films (options().centre > 0): the models' mean_maps over
  /// them, used by every later run. Error when the options' centre is 0.
  void set_centre(const std::vector<std::string>& films, const data::ImageReadOptions& read = {}, bool progress = false);
  /// Films set_centre averaged (0 = none yet).
  int64_t centre_films() const { return centre_films_; }

 private:
  std::vector<model::AflocModel> nets_;
  LocalizeOptions o_;
  std::vector<PromptEncoder*> prompts_;
  std::vector<std::vector<torch::Tensor>> centre_means_;  ///< per model, per level (set_centre)
  int64_t centre_films_ = 0;
};

/// The presence test of a free-text prompt: positive = the prompt, negative = the authors'
/// negative form "no {finding}. " where the prompt reads "Findings suggesting {finding}." and
/// "no {prompt}. " otherwise.
ClassPrompts presence_prompts(const std::string& prompt);

/// Connected components of (heatmap > t) for each threshold, largest first within a threshold.
std::vector<Region> find_regions(const torch::Tensor& heatmap, const std::vector<double>& thresholds, int64_t min_pixels = 1);

/// Overlay PNG: the heatmap in a diverging blue-white-red colormap over the grey image (same size),
/// optional ground-truth boxes (x, y, w, h in image pixels) in green, the title underneath (one
/// line per '\n').
/// `outline`: a ground-truth mask (same size, non-zero = inside) drawn as a white contour.
void write_overlay(const std::string& path, const data::Gray8& image, const torch::Tensor& heatmap, const std::string& title,
                   const std::vector<std::array<int64_t, 4>>& boxes = {}, const data::Gray8* outline = nullptr);
/// The heatmap alone as a colour PNG (same colormap; margin black).
void write_heatmap_png(const std::string& path, const torch::Tensor& heatmap);
/// A binary mask PNG (0/255) of heatmap > t.
void write_mask_png(const std::string& path, const torch::Tensor& heatmap, double threshold);

/// A file-name-safe short form of a prompt ("Findings suggesting pneumothorax." -> "findings_suggesting_pneumothorax").
std::string slug(const std::string& text);

}  // namespace afloc::infer
