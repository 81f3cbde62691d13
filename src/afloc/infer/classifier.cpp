#include "afloc/infer/classifier.h"

#include <algorithm>

namespace afloc::infer {

torch::Tensor mean_rows(const torch::Tensor& vectors, const std::vector<std::vector<int64_t>>& rows) {
  TORCH_CHECK(vectors.dim() == 2, "mean_rows: vectors must be (P, D)");
  std::vector<torch::Tensor> out;
  for (const auto& r : rows) {
    TORCH_CHECK(!r.empty(), "mean_rows: a class has no prompts");
    out.push_back(vectors.index_select(0, torch::tensor(r, torch::kLong).to(vectors.device())).mean(0));
  }
  return torch::stack(out);
}

ClassHead build_class_head(PromptEncoder& encoder, const PromptBank& bank) {
  validate(bank);
  // All prompts in one call, rows in order; the encoder encodes each distinct prompt once (banks
  // built from one table often repeat negatives across classes).
  std::vector<std::string> prompts;
  auto rows_of = [&](const std::vector<std::string>& set) {
    std::vector<int64_t> rows;
    for (const auto& p : set) {
      rows.push_back(static_cast<int64_t>(prompts.size()));
      prompts.push_back(p);
    }
    return rows;
  };
  std::vector<std::vector<int64_t>> pos_rows, neg_rows;
  for (const auto& c : bank.classes) {
    pos_rows.push_back(rows_of(c.pos));
    neg_rows.push_back(rows_of(c.neg));
  }
  const torch::Tensor vectors = encoder.encode(prompts);
  ClassHead head;
  head.mode = bank.mode;
  for (const auto& c : bank.classes) head.names.push_back(c.name);
  head.pos = mean_rows(vectors, pos_rows);
  const bool any_neg = std::any_of(bank.classes.begin(), bank.classes.end(), [](const ClassPrompts& c) { return !c.neg.empty(); });
  if (bank.mode == ClassifyMode::kBinary || any_neg) {
    // A multi-class bank may leave some negatives out; they are never read in that mode.
    for (size_t k = 0; k < neg_rows.size(); ++k)
      if (neg_rows[k].empty()) neg_rows[k] = pos_rows[k];
    head.neg = mean_rows(vectors, neg_rows);
  }
  return head;
}

torch::Tensor class_scores(const torch::Tensor& global, const ClassHead& head) {
  TORCH_CHECK(global.dim() == 2 && global.size(1) == head.pos.size(1), "class_scores: global embeddings must be (N, ",
              head.pos.size(1), "), got ", global.sizes());
  const torch::Tensor g = global.to(head.pos.device(), head.pos.scalar_type());
  const torch::Tensor pos = torch::matmul(g, head.pos.t());  // (N, C)
  if (head.mode == ClassifyMode::kMultiClass) return torch::softmax(pos, 1);
  TORCH_CHECK(head.neg.defined(), "class_scores: binary mode needs negative prompts");
  const torch::Tensor neg = torch::matmul(g, head.neg.t());
  return torch::softmax(torch::stack({pos, neg}, 2), 2);  // (N, C, 2)
}

torch::Tensor class_probabilities(const torch::Tensor& global, const ClassHead& head) {
  const torch::Tensor s = class_scores(global, head);
  return head.mode == ClassifyMode::kBinary ? s.select(2, 0) : s;
}

torch::Tensor global_embeddings(model::AflocModel& net, const std::vector<data::Gray8>& images) {
  TORCH_CHECK(!images.empty(), "global_embeddings: no images");
  return image_embeddings(net, images).global;
}

model::ImageEmbeddings image_embeddings(model::AflocModel& net, const std::vector<data::Gray8>& images, size_t start, size_t end) {
  end = std::min(end, images.size());
  TORCH_CHECK(start < end, "image_embeddings: no images");
  std::vector<torch::Tensor> batch;
  for (size_t i = start; i < end; ++i) batch.push_back(data::preprocess(images[i], net->config().image_size));
  torch::InferenceMode guard;
  // The shallow map only when heatmaps read it (AflocConfig::heatmap_levels).
  model::ImageEmbeddings e = net->encode_images(torch::stack(batch).to(net->device()), net->config().reads_shallow());
  e.global = e.global.to(torch::kFloat);
  e.deep = e.deep.to(torch::kFloat);
  if (e.shallow.defined()) e.shallow = e.shallow.to(torch::kFloat);
  return e;
}

}  // namespace afloc::infer
