#pragma once
/// Multi-level alignment losses (SPEC §3, GLoRIA-style), batched over every (image, caption) pair.
#include <torch/torch.h>

#include "afloc/model/config.h"

namespace afloc::model {
struct ImageEmbeddings;
struct TextEmbeddings;
}  // namespace afloc::model

namespace afloc::loss {

struct LocalLossOptions {
  double temp1 = 4.0;   ///< attention sharpening
  double temp2 = 5.0;   ///< unit/region match
  double temp3 = 10.0;  ///< logit scale
  bool return_attention = false;  ///< also return each caption's attention over its own image
  /// Upper bound on the elements of one (images x captions x regions x units) block; captions are
  /// processed in chunks below it (0 = one block).
  int64_t max_block_elements = int64_t{1} << 25;
};

struct LocalLossResult {
  torch::Tensor loss0;         ///< CE over captions for each image (image -> text)
  torch::Tensor loss1;         ///< CE over images for each caption (text -> image)
  torch::Tensor similarities;  ///< (B_img, B_cap): temp3 * log sum_i exp(temp2 cos(c_i, t_i))
  std::vector<torch::Tensor> attention;  ///< caption i over image i: (1, len_i, h, w)
};

/// Local alignment. regions: (B, D, h, w); units: (B, D, T) with T >= max(lens); lens: (B) int64,
/// the number of leading units each caption uses (the authors' cap_lens, [CLS] included).
/// For caption k and image b: a = softmax_units(regions_b^T units_k) * temp1, softmax over
/// regions; c = regions_b a; Z = log sum_i exp(temp2 cos(c_i, t_i)).
/// skip (optional, (B, T') bool, T' >= max(lens)): units left out as if the caption did not hold
/// them (the model config's loss.skip_negated).
/// drop (optional, (B, B) bool, false on the diagonal; every contrastive term takes it): pairs (image
/// b, caption k) left out of both softmaxes, neither positive nor negative: captions that say the
/// same as b's own (false negatives; the trainer's loop.drop_same_labels).
LocalLossResult local_loss(const torch::Tensor& regions, const torch::Tensor& units,
                           const torch::Tensor& lens, const LocalLossOptions& options = {},
                           const torch::Tensor& skip = {}, const torch::Tensor& drop = {});

/// The dropped-pairs mask of a batch from per-sample keys (B) int64: (b, k) with b != k and equal
/// keys, as local_loss's `drop` takes it.
torch::Tensor same_key_pairs(const torch::Tensor& keys);

/// Reference twin of local_loss: the authors' loop, one caption at a time against the whole image
/// batch, written plainly. For tests and benchmarks; returns loss0 and loss1 only.
std::pair<torch::Tensor, torch::Tensor> local_loss_reference(const torch::Tensor& regions,
                                                             const torch::Tensor& units,
                                                             const std::vector<int64_t>& lens,
                                                             const LocalLossOptions& options = {});

struct GlobalLossResult {
  torch::Tensor loss0, loss1;
  torch::Tensor scores;  ///< (B, B): temp3 * cos(v_g[b], t_r[k])
};

/// Global alignment of image vectors (B, D) with report vectors (B, D).
GlobalLossResult global_loss(const torch::Tensor& image, const torch::Tensor& report,
                             double temp3 = 10.0, const torch::Tensor& drop = {});

/// Region–report multiple-instance term (model config loss.region_report_weight; not in the
/// authors' method). deep (B, D, h, w), report (B, D). score[b, k] = log mean_r exp(gamma cos(v_d[b, r],
/// t_r[k])) / gamma: a smooth maximum over image b's regions, the mean (not the sum) so that a
/// uniform map scores its cosine whatever the map's side. CE over temp3 * score both ways.
GlobalLossResult region_report_loss(const torch::Tensor& deep, const torch::Tensor& report, double gamma,
                                    double temp3 = 10.0, const torch::Tensor& drop = {});

/// The terms and their weighted sum; a term switched off in the config is an undefined
/// tensor and does not enter the total.
struct AlignmentLoss {
  torch::Tensor total;
  torch::Tensor word;      ///< (loss0 + loss1) * word_weight: shallow regions x words
  torch::Tensor sentence;  ///< deep regions x sentences
  torch::Tensor report;    ///< global vector x report vector
  torch::Tensor region;    ///< deep regions x report vector (loss.region_report_weight > 0 only)
  torch::Tensor shallow_sentence;  ///< shallow regions x sentences (loss.shallow_sentence_weight > 0 only)
};

AlignmentLoss alignment_loss(const model::ImageEmbeddings& image, const model::TextEmbeddings& text,
                             const model::LossConfig& config, int64_t max_block_elements = int64_t{1} << 25,
                             const torch::Tensor& drop = {});

/// The same from raw tensors (what the golden losses case provides).
AlignmentLoss alignment_loss(const torch::Tensor& shallow, const torch::Tensor& deep,
                             const torch::Tensor& global, const torch::Tensor& words,
                             const torch::Tensor& word_lens, const torch::Tensor& sentences,
                             const torch::Tensor& sent_lens, const torch::Tensor& report,
                             const model::LossConfig& config,
                             int64_t max_block_elements = int64_t{1} << 25,
                             const torch::Tensor& sent_negated = {}, const torch::Tensor& drop = {});

}  // namespace afloc::loss
