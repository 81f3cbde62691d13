#include "afloc/model/afloc_model.h"

#include <cstring>

#include "afloc/text/clean.h"

namespace afloc::model {

namespace {

text::TokenizerOptions tokenizer_options(const AflocConfig& c) {
  text::TokenizerOptions o;
  o.max_length = static_cast<int>(c.text.max_tokens);
  o.lowercase = c.text.lowercase;
  o.strip_accents = c.text.strip_accents;
  return o;
}

}  // namespace

TokenBatch TokenBatch::to(const torch::Device& device) const {
  return TokenBatch{ids.to(device), attention_mask.to(device), token_type_ids.to(device), texts};
}

AflocModelImpl::AflocModelImpl(const AflocConfig& config, const text::Vocab& vocab)
    : config_(config), tokenizer_(vocab, tokenizer_options(config)) {
  config_.validate();
  img_encoder = register_module("img_encoder", ImageEncoder(config_));
  text_encoder = register_module("text_encoder", TextEncoder(config_, vocab));
}

torch::Device AflocModelImpl::device() const {
  return img_encoder->global_embedder->weight.device();
}

ImageEmbeddings AflocModelImpl::encode_images(const torch::Tensor& images, bool with_shallow) {
  return img_encoder->forward(images, with_shallow);
}

void AflocModelImpl::optimize_for_inference() {
  eval();
  img_encoder->optimize_for_inference();
}

void AflocModelImpl::set_dense_map(bool on) {
  config_.dense_map = on;
  img_encoder->dense_map = on;
}

void AflocModelImpl::set_heatmap_levels(const std::string& levels) {
  AflocConfig c = config_;
  c.heatmap_levels = levels;
  c.validate();
  config_ = c;
}

TextEmbeddings AflocModelImpl::encode_text(const TokenBatch& tokens) {
  return text_encoder(tokens.ids, tokens.attention_mask, tokens.token_type_ids);
}

TokenBatch AflocModelImpl::tokenize(const std::vector<std::string>& texts, TextMode mode) const {
  const auto b = static_cast<int64_t>(texts.size());
  const int64_t t = config_.text.max_tokens;
  TokenBatch out;
  out.ids = torch::zeros({b, t}, torch::kLong);
  out.attention_mask = torch::zeros({b, t}, torch::kLong);
  out.token_type_ids = torch::zeros({b, t}, torch::kLong);
  for (int64_t i = 0; i < b; ++i) {
    const std::string& raw = texts[static_cast<size_t>(i)];
    std::string prepared = mode == TextMode::kPrompt ? text::clean_prompt(raw) : raw;
    const text::Encoding e = tokenizer_.encode(prepared, /*pad=*/true);
    std::memcpy(out.ids[i].data_ptr<int64_t>(), e.input_ids.data(), sizeof(int64_t) * static_cast<size_t>(t));
    std::memcpy(out.attention_mask[i].data_ptr<int64_t>(), e.attention_mask.data(),
                sizeof(int64_t) * static_cast<size_t>(t));
    out.texts.push_back(std::move(prepared));
  }
  return out;
}

loss::AlignmentLoss AflocModelImpl::loss(const ImageEmbeddings& image, const TextEmbeddings& text,
                                         const torch::Tensor& drop) const {
  return loss::alignment_loss(image, text, config_.loss, int64_t{1} << 25, drop);
}

}  // namespace afloc::model
