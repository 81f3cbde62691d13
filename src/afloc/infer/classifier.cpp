#include "afloc/infer/classifier.h"

#include <map>

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
  // Each distinct prompt string is encoded once (the 42 pneumothorax prompts share nothing, but
  // banks built from one table often repeat negatives across classes).
  std::vector<std::string> unique;
  std::map<std::string, int64_t> index;
  auto row = [&](const std::string& p) {
    const auto [it, inserted] = index.emplace(p, static_cast<int64_t>(unique.size()));
    if (inserted) unique.push_back(p);
    return it->second;
  };
  std::vector<std::vector<int64_t>> pos_rows, neg_rows;
  bool any_neg = false;
  for (const auto& c : bank.classes) {
    pos_rows.emplace_back();
    neg_rows.emplace_back();
    for (const auto& p : c.pos) pos_rows.back().push_back(row(p));
    for (const auto& p : c.neg) neg_rows.back().push_back(row(p));
    any_neg = any_neg || !c.neg.empty();
  }
  const torch::Tensor vectors = encoder.encode(unique);
  ClassHead head;
  head.mode = bank.mode;
  for (const auto& c : bank.classes) head.names.push_back(c.name);
  head.pos = mean_rows(vectors, pos_rows);
  if (bank.mode == ClassifyMode::kBinary || any_neg) {
    // A multi-class bank may leave some negatives out; they are never read in that mode.
    for (auto& r : neg_rows)
      if (r.empty()) r = pos_rows[static_cast<size_t>(&r - neg_rows.data())];
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
  std::vector<torch::Tensor> batch;
  for (const auto& im : images) batch.push_back(data::preprocess(im, net->config().image_size));
  torch::InferenceMode guard;
  return net->encode_images(torch::stack(batch).to(net->device()), /*with_shallow=*/false).global.to(torch::kFloat);
}

}  // namespace afloc::infer
