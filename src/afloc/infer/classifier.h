#pragma once
/// Zero-shot classification (SPEC §4): each class's positive and negative prompt sets are averaged
/// (unnormalised report vectors t_r) into a bias-free head; an image's global embedding v_g gives
/// logits v_g . mean_pos and v_g . mean_neg.
///   binary:     p(class present) = softmax(v_g . pos_c, v_g . neg_c)[0]        per class
///   multiclass: p(class)         = softmax over c of v_g . pos_c                one label per image
#include <torch/torch.h>

#include <string>
#include <vector>

#include "afloc/data/image.h"
#include "afloc/infer/prompt_bank.h"
#include "afloc/infer/prompt_encoder.h"

namespace afloc::infer {

/// The class head: mean prompt vectors, (C, D) each; neg is undefined in multi-class mode when
/// no class has negatives.
struct ClassHead {
  std::vector<std::string> names;
  ClassifyMode mode = ClassifyMode::kBinary;
  torch::Tensor pos, neg;
};

/// Encodes the bank's prompts (each distinct prompt once) and averages them per class.
ClassHead build_class_head(PromptEncoder& encoder, const PromptBank& bank);

/// Averages per-prompt vectors (P, D) into (C, D) given each class's row indices.
torch::Tensor mean_rows(const torch::Tensor& vectors, const std::vector<std::vector<int64_t>>& rows);

/// Scores for global embeddings (N, D): binary -> (N, C, 2) softmax over (pos, neg);
/// multiclass -> (N, C) softmax over classes.
torch::Tensor class_scores(const torch::Tensor& global, const ClassHead& head);

/// The probability of each class, (N, C): binary -> scores[:, :, 0]; multiclass -> scores.
torch::Tensor class_probabilities(const torch::Tensor& global, const ClassHead& head);

/// Global image embeddings v_g (N, D) float for 8-bit grey images of any size, preprocessed as
/// SPEC §4, encoded as one batch under InferenceMode.
torch::Tensor global_embeddings(model::AflocModel& net, const std::vector<data::Gray8>& images);
/// The same pass's embeddings (global and deep, float; no shallow map) of images[start, end)
/// (end = npos: to the last), each preprocessed at the model's own input size.
model::ImageEmbeddings image_embeddings(model::AflocModel& net, const std::vector<data::Gray8>& images, size_t start = 0,
                                        size_t end = std::string::npos);

}  // namespace afloc::infer
