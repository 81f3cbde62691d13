#pragma once
/// The AFLoc model: image encoder + text encoder + tokenizer, with the authors' module names
/// (img_encoder.*, text_encoder.model.*; the Lightning checkpoint adds the prefix "afloc.").
#include <torch/torch.h>

#include <string>
#include <vector>

#include "afloc/loss/alignment.h"
#include "afloc/model/config.h"
#include "afloc/model/image_encoder.h"
#include "afloc/model/text_encoder.h"
#include "afloc/text/tokenizer.h"

namespace afloc::model {

/// Token tensors for a batch of texts, each (B, T) int64.
struct TokenBatch {
  torch::Tensor ids, attention_mask, token_type_ids;
  std::vector<std::string> texts;  ///< the texts as tokenized (after cleaning, if any)
  TokenBatch to(const torch::Device& device) const;
};

/// How texts are prepared before tokenization.
enum class TextMode {
  kPrompt,   ///< SPEC §2 prompt cleaning (process_text): sentences joined by spaces
  kCaption,  ///< already a training caption (cleaned sentences joined by ". "): tokenized as is
  kRaw,      ///< no cleaning at all
};

class AflocModelImpl : public torch::nn::Module {
 public:
  AflocModelImpl(const AflocConfig& config, const text::Vocab& vocab);

  /// images: (B, 3, S, S) in [-1, 1] on the model's device; with_shallow = false skips v_s.
  ImageEmbeddings encode_images(const torch::Tensor& images, bool with_shallow = true);
  /// Eval mode plus the image encoder's inference layout (folded batch norms, channels-last).
  /// Call once after loading, before inference; not for training.
  void optimize_for_inference();
  /// AflocConfig::dense_map on a built (trained or loaded) model: v_d at twice its side from
  /// four translated passes; weights unchanged.
  void set_dense_map(bool on);
  /// AflocConfig::heatmap_levels on a built model ("deep", "shallow" or "both"; error otherwise).
  void set_heatmap_levels(const std::string& levels);
  TextEmbeddings encode_text(const TokenBatch& tokens);
  /// Tokenizes texts (CPU tensors; move them with TokenBatch::to).
  TokenBatch tokenize(const std::vector<std::string>& texts, TextMode mode = TextMode::kPrompt) const;
  /// The training objective for paired images and captions; drop: pairs left out of the contrast
  /// (loss::local_loss).
  loss::AlignmentLoss loss(const ImageEmbeddings& image, const TextEmbeddings& text,
                           const torch::Tensor& drop = {}) const;

  const AflocConfig& config() const { return config_; }
  const text::Tokenizer& tokenizer() const { return tokenizer_; }
  torch::Device device() const;

  ImageEncoder img_encoder{nullptr};
  TextEncoder text_encoder{nullptr};

 private:
  AflocConfig config_;
  text::Tokenizer tokenizer_;
};
TORCH_MODULE(AflocModel);

}  // namespace afloc::model
