#include "afloc/model/bert.h"

#include <cmath>

namespace afloc::model {
namespace nn = torch::nn;

namespace {

// transformers' BertPreTrainedModel._init_weights: N(0, 0.02) weights, zero biases, LayerNorm 1/0.
void init_linear(nn::Linear& l) {
  nn::init::normal_(l->weight, 0.0, 0.02);
  if (l->bias.defined()) nn::init::zeros_(l->bias);
}

nn::LayerNorm layer_norm(const BertConfig& c) {
  return nn::LayerNorm(nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps));
}

}  // namespace

BertEmbeddingsImpl::BertEmbeddingsImpl(const BertConfig& c) {
  word_embeddings = register_module(
      "word_embeddings",
      nn::Embedding(nn::EmbeddingOptions(c.vocab_size, c.hidden_size).padding_idx(c.pad_token_id)));
  position_embeddings = register_module(
      "position_embeddings", nn::Embedding(c.max_position_embeddings, c.hidden_size));
  token_type_embeddings =
      register_module("token_type_embeddings", nn::Embedding(c.type_vocab_size, c.hidden_size));
  LayerNorm = register_module("LayerNorm", layer_norm(c));
  dropout = register_module("dropout", nn::Dropout(c.hidden_dropout));
  position_ids = register_buffer(
      "position_ids", torch::arange(c.max_position_embeddings, torch::kLong).unsqueeze(0));
  for (auto* e : {&word_embeddings, &position_embeddings, &token_type_embeddings}) {
    torch::NoGradGuard g;
    nn::init::normal_((*e)->weight, 0.0, 0.02);
  }
  {
    torch::NoGradGuard g;
    word_embeddings->weight[c.pad_token_id].zero_();
  }
}

torch::Tensor BertEmbeddingsImpl::forward(const torch::Tensor& ids, const torch::Tensor& token_type) {
  const int64_t t = ids.size(1);
  TORCH_CHECK(t <= position_ids.size(1), "sequence length ", t, " exceeds max_position_embeddings ",
              position_ids.size(1));
  const torch::Tensor pos = position_ids.narrow(1, 0, t);
  torch::Tensor e = word_embeddings(ids) + position_embeddings(pos) + token_type_embeddings(token_type);
  return dropout(LayerNorm(e));
}

BertSelfAttentionImpl::BertSelfAttentionImpl(const BertConfig& c)
    : heads(c.num_heads), head_dim(c.hidden_size / c.num_heads) {
  query = register_module("query", nn::Linear(c.hidden_size, c.hidden_size));
  key = register_module("key", nn::Linear(c.hidden_size, c.hidden_size));
  value = register_module("value", nn::Linear(c.hidden_size, c.hidden_size));
  dropout = register_module("dropout", nn::Dropout(c.attention_dropout));
  for (auto* l : {&query, &key, &value}) init_linear(*l);
}

torch::Tensor BertSelfAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& mask_bias) {
  // x: (B, T, H) -> heads (B, nh, T, hd)
  const int64_t b = x.size(0), t = x.size(1);
  auto split = [&](const torch::Tensor& y) {
    return y.view({b, t, heads, head_dim}).permute({0, 2, 1, 3});
  };
  const torch::Tensor q = split(query(x));
  const torch::Tensor k = split(key(x));
  const torch::Tensor v = split(value(x));
  torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(head_dim));
  scores = scores + mask_bias;  // (B, 1, 1, T) broadcast over heads and queries
  const torch::Tensor probs = dropout(torch::softmax(scores, -1));
  return torch::matmul(probs, v).permute({0, 2, 1, 3}).reshape({b, t, heads * head_dim});
}

BertResidualOutputImpl::BertResidualOutputImpl(int64_t in, int64_t out, const BertConfig& c) {
  dense = register_module("dense", nn::Linear(in, out));
  LayerNorm = register_module("LayerNorm", layer_norm(c));
  dropout = register_module("dropout", nn::Dropout(c.hidden_dropout));
  init_linear(dense);
}

torch::Tensor BertResidualOutputImpl::forward(const torch::Tensor& x, const torch::Tensor& residual) {
  return LayerNorm(dropout(dense(x)) + residual);
}

BertAttentionImpl::BertAttentionImpl(const BertConfig& c) {
  self = register_module("self", BertSelfAttention(c));
  output = register_module("output", BertResidualOutput(c.hidden_size, c.hidden_size, c));
}

torch::Tensor BertAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& mask_bias) {
  return output(self(x, mask_bias), x);
}

BertIntermediateImpl::BertIntermediateImpl(const BertConfig& c) {
  dense = register_module("dense", nn::Linear(c.hidden_size, c.intermediate_size));
  init_linear(dense);
}

torch::Tensor BertIntermediateImpl::forward(const torch::Tensor& x) { return torch::gelu(dense(x)); }

BertLayerImpl::BertLayerImpl(const BertConfig& c) {
  attention = register_module("attention", BertAttention(c));
  intermediate = register_module("intermediate", BertIntermediate(c));
  output = register_module("output", BertResidualOutput(c.intermediate_size, c.hidden_size, c));
}

torch::Tensor BertLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& mask_bias) {
  const torch::Tensor a = attention(x, mask_bias);
  return output(intermediate(a), a);
}

BertPoolerImpl::BertPoolerImpl(const BertConfig& c) {
  dense = register_module("dense", nn::Linear(c.hidden_size, c.hidden_size));
  init_linear(dense);
}

torch::Tensor BertPoolerImpl::forward(const torch::Tensor& hidden) {
  return torch::tanh(dense(hidden.select(1, 0)));
}

BertEncoderImpl::BertEncoderImpl(const BertConfig& c) {
  layer = register_module("layer", nn::ModuleList());
  for (int64_t i = 0; i < c.num_layers; ++i) layer->push_back(BertLayer(c));
}

BertModelImpl::BertModelImpl(const BertConfig& c) : config(c) {
  embeddings = register_module("embeddings", BertEmbeddings(c));
  encoder = register_module("encoder", BertEncoder(c));
  pooler = register_module("pooler", BertPooler(c));
}

std::vector<torch::Tensor> BertModelImpl::forward(const torch::Tensor& ids,
                                                  const torch::Tensor& attention_mask,
                                                  const torch::Tensor& token_type, int64_t last_n) {
  TORCH_CHECK(ids.dim() == 2, "BERT input ids must be (B, T), got ", ids.sizes());
  // transformers 4.2 get_extended_attention_mask: (1 - mask) * -10000 on the key axis.
  const torch::Tensor mask_bias =
      (1.0 - attention_mask.to(torch::kFloat).unsqueeze(1).unsqueeze(2)) * -10000.0;
  const int64_t n_states = config.num_layers + 1;
  const int64_t keep_from = last_n > 0 ? n_states - last_n : 0;
  std::vector<torch::Tensor> states;
  torch::Tensor h = embeddings(ids, token_type);
  if (keep_from <= 0) states.push_back(h);
  for (int64_t i = 0; i < config.num_layers; ++i) {
    h = encoder->layer[static_cast<size_t>(i)]->as<BertLayerImpl>()->forward(h, mask_bias);
    if (i + 1 >= keep_from) states.push_back(h);
  }
  return states;
}

}  // namespace afloc::model
