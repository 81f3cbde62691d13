#pragma once
/// BERT encoder with Hugging Face `BertModel` module names (embeddings.word_embeddings,
/// encoder.layer.N.attention.self.query, ..., pooler.dense), as in transformers 4.2.
#include <torch/torch.h>

#include "afloc/model/config.h"

namespace afloc::model {

class BertEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit BertEmbeddingsImpl(const BertConfig& c);
  /// ids, token_type: (B, T) int64 -> (B, T, H)
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& token_type);

  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr},
      token_type_embeddings{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};  // NOLINT: Hugging Face attribute name
  torch::nn::Dropout dropout{nullptr};
  torch::Tensor position_ids;  ///< persistent buffer (1, max_positions), as in transformers 4.2
};
TORCH_MODULE(BertEmbeddings);

class BertSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit BertSelfAttentionImpl(const BertConfig& c);
  /// x: (B, T, H); mask_bias: (B, 1, 1, T) additive -> (B, T, H)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask_bias);

  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr};
  torch::nn::Dropout dropout{nullptr};
  int64_t heads, head_dim;
};
TORCH_MODULE(BertSelfAttention);

/// dense -> dropout -> LayerNorm(x + residual); used as attention.output and output.
class BertResidualOutputImpl : public torch::nn::Module {
 public:
  BertResidualOutputImpl(int64_t in, int64_t out, const BertConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& residual);

  torch::nn::Linear dense{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};  // NOLINT: Hugging Face attribute name
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(BertResidualOutput);

class BertAttentionImpl : public torch::nn::Module {
 public:
  explicit BertAttentionImpl(const BertConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask_bias);

  BertSelfAttention self{nullptr};
  BertResidualOutput output{nullptr};
};
TORCH_MODULE(BertAttention);

class BertIntermediateImpl : public torch::nn::Module {
 public:
  explicit BertIntermediateImpl(const BertConfig& c);
  /// GELU (erf form) of dense(x).
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear dense{nullptr};
};
TORCH_MODULE(BertIntermediate);

class BertLayerImpl : public torch::nn::Module {
 public:
  explicit BertLayerImpl(const BertConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask_bias);

  BertAttention attention{nullptr};
  BertIntermediate intermediate{nullptr};
  BertResidualOutput output{nullptr};
};
TORCH_MODULE(BertLayer);

class BertPoolerImpl : public torch::nn::Module {
 public:
  explicit BertPoolerImpl(const BertConfig& c);
  /// tanh(dense(x[:, 0]))
  torch::Tensor forward(const torch::Tensor& hidden);
  torch::nn::Linear dense{nullptr};
};
TORCH_MODULE(BertPooler);

class BertEncoderImpl : public torch::nn::Module {
 public:
  explicit BertEncoderImpl(const BertConfig& c);
  torch::nn::ModuleList layer{nullptr};
};
TORCH_MODULE(BertEncoder);

/// The BERT trunk. forward returns every hidden state: [embeddings, layer 1, ..., layer N], each
/// (B, T, H), like `output_hidden_states=True`. The pooler exists for checkpoint compatibility and
/// is not used by AFLoc.
class BertModelImpl : public torch::nn::Module {
 public:
  explicit BertModelImpl(const BertConfig& c);
  /// ids, attention_mask, token_type: (B, T) int64. Only the last `last_n` states are returned
  /// when last_n > 0 (saves memory at inference).
  std::vector<torch::Tensor> forward(const torch::Tensor& ids, const torch::Tensor& attention_mask,
                                     const torch::Tensor& token_type, int64_t last_n = 0);

  BertEmbeddings embeddings{nullptr};
  BertEncoder encoder{nullptr};
  BertPooler pooler{nullptr};
  BertConfig config;
};
TORCH_MODULE(BertModel);

}  // namespace afloc::model
