#pragma once
/// Model configurations: plain structs with defaults, JSON-serialisable, with named presets.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace afloc::model {

/// torchvision-layout ResNet. depth 10 (one block per stage), 18 and 34 use basic blocks, 50
/// bottlenecks; width is the channel count of the stem and layer1 (torchvision: 64; smaller
/// widths give cheap configurations).
struct ResNetConfig {
  int depth = 50;
  int width = 64;
  /// torchvision's replace_stride_with_dilation for layer3: its stride 2 becomes dilation 2 (and
  /// layer4 keeps dilation 2), so layer3 and the deep map have layer2's side (stride 8) with
  /// layer3's receptive fields. Not in the authors' model (false); 4x layer3's compute.
  bool dilate_layer3 = false;
};

/// Hugging Face BertModel hyper-parameters (Bio_ClinicalBERT by default).
struct BertConfig {
  int64_t vocab_size = 28996;
  int64_t hidden_size = 768;
  int64_t num_layers = 12;
  int64_t num_heads = 12;
  int64_t intermediate_size = 3072;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  double hidden_dropout = 0.1;
  double attention_dropout = 0.1;
  int64_t pad_token_id = 0;
};

/// Which alignment terms train the model (ablations switch them off) and their weights.
struct LossConfig {
  bool use_word = true;      ///< L_SW: shallow regions (layer2) with words
  bool use_sentence = true;  ///< L_DS: deep regions (layer3) with sentences
  bool use_report = true;    ///< L_GR: global image vector with the report vector
  double word_weight = 1.0;
  double sentence_weight = 1.0;
  double report_weight = 1.0;
  double temp1 = 4.0;   ///< attention sharpening
  double temp2 = 5.0;   ///< unit/region match
  double temp3 = 10.0;  ///< contrastive logit scale
  /// Leave negated sentences ("No pleural effusion.", "... without consolidation.") out of the
  /// sentence-region loss; they still shape the report vector. Not in the authors' method (off in
  /// `paper`): a text encoder trained from scratch otherwise learns a finding's name mostly from
  /// sentences that deny it, aligned with films that do not show it (docs/training.md).
  bool skip_negated = false;
  /// Region–report term (0 = off; not in the authors' method, off in `paper`): the zero-shot
  /// heatmap's own reading, deep regions against the report vector, trained as multiple-instance
  /// contrast. An image's score for a caption is the log-sum-exp pool over its regions of
  /// region_report_gamma * cos(v_d[r], t_r), scaled to temp3 and contrasted both ways over the batch
  /// like the global term (docs/training.md).
  double region_report_weight = 0.0;
  double region_report_gamma = 10.0;
  /// Sentence–shallow term (0 = off; not in the authors' method, off in `paper`): the
  /// sentence–region loss of the deep map applied with the same sentences (and skip_negated) to
  /// the shallow map v_s too, weighted by this, so that layer2's finer map localizes sentences
  /// as well (read with AflocConfig::heatmap_levels; docs/training.md).
  double shallow_sentence_weight = 0.0;
};

/// Tokenizer settings stored with a model.
struct TextConfig {
  int64_t max_tokens = 97;     ///< [CLS] + pieces + [SEP], padded
  int64_t last_n_layers = 4;   ///< hidden states summed (hidden_states[-n:], embeddings included)
  bool lowercase = false;      ///< BertNormalizer lowercase
  bool strip_accents = false;  ///< BertNormalizer strip_accents
};

/// The whole AFLoc model. The embedding size is bert.hidden_size (the text side has no projection).
struct AflocConfig {
  std::string name = "paper";
  ResNetConfig resnet;
  int64_t image_size = 224;     ///< input side (square), pixels in [-1, 1]
  int64_t upsample_size = 299;  ///< bilinear (align_corners) resize inside the model; 0 = none
  /// Backbone stage whose output gives the deep local features v_d: 3 (SPEC §1, the authors'
  /// layer3) or 2 (layer2: twice the map side and smaller receptive fields, for small models
  /// trained from scratch, whose layer3 cells see the whole image).
  int64_t deep_layer = 3;
  /// Shift the network's input by half the deep map's stride ((s - 1) / 2 pixels up and left,
  /// edge pixels replicated) so that each deep cell's receptive field is centred where SPEC §4's
  /// bilinear upsampling (align_corners=False) draws it. Without it, a ResNet cell i sees pixels
  /// centred on s*i while the heatmap puts it at s*i + (s - 1)/2: half a cell down and right
  /// (7.5 px of 160 for `tiny`, 10.5 px at 224). The authors' model has no shift (false).
  bool align_cells = false;
  /// Shift-and-stitch: v_d at twice its side, the extra cells computed by running the image
  /// network on the input translated by half the deep stride (8 px of the upsampled input from
  /// layer3), so every cell of the finer map is one the network computes in training. Costs four
  /// image-network passes for v_d (plus one for v_g and v_s); an inference option that any trained
  /// model accepts (weights unchanged). The authors' model has none (false).
  bool dense_map = false;
  /// The maps a heatmap reads: "deep" (v_d; SPEC §4, the authors'), "shallow" (v_s, layer2, twice
  /// the side) or "both" (each (image, prompt) heatmap the mean of the two maps' heatmaps, each
  /// normalised as SPEC §4, as an ensemble's are). v_s localizes sentences only in models trained
  /// with loss.shallow_sentence_weight > 0 (otherwise it aligns with words, or with nothing). With
  /// align_cells the shallow map is read where its cells look (model::heatmap_maps). An inference
  /// option any model accepts (weights unchanged).
  std::string heatmap_levels = "deep";
  bool reads_shallow() const { return heatmap_levels != "deep"; }
  BertConfig bert;
  TextConfig text;
  LossConfig loss;

  int64_t embed_dim() const { return bert.hidden_size; }
  /// Error naming the field for inconsistent values (depth not 10/18/34/50, heads not dividing
  /// hidden, last_n_layers > layers + 1, ...).
  void validate() const;
  /// Spatial side of the deep (deep_layer) and shallow (layer2) feature maps for this input size.
  int64_t deep_side() const;
  int64_t shallow_side() const;
  /// Input pixels (after the internal upsampling) per cell of the network's own deep map: 16 from
  /// layer3, 8 from layer2 or dilated layer3.
  int64_t network_stride() const { return deep_layer == 2 || resnet.dilate_layer3 ? 8 : 16; }
  /// Input pixels by which align_cells shifts the network's input: (network_stride() - 1) / 2, 0
  /// without it.
  double cell_shift() const { return align_cells ? (static_cast<double>(network_stride()) - 1.0) / 2.0 : 0.0; }
  /// Input pixels per cell of v_d: network_stride(), halved by dense_map.
  int64_t deep_stride() const { return dense_map ? network_stride() / 2 : network_stride(); }
};

/// Named presets: "paper" (ResNet-50 + BERT-base, 768-d, 97 tokens, 224 input) and "tiny"
/// (ResNet-10 of width 32 at 128 px upsampled to 160, 4-layer BERT of width 128; a few minutes
/// of pretraining on 2 CPU cores). Error for an unknown name.
AflocConfig preset(const std::string& name);
std::vector<std::string> preset_names();
/// The values AflocConfig::heatmap_levels takes: deep, shallow, both.
const std::vector<std::string>& heatmap_level_names();

void to_json(nlohmann::json& j, const AflocConfig& c);
/// Strict: unknown keys and wrong types raise Error naming the key path.
void from_json(const nlohmann::json& j, AflocConfig& c);

/// Loads a config JSON file: either a full config, or {"preset": "tiny", ...overrides}.
AflocConfig load_config(const std::string& path);
/// Parses a config from JSON text; origin names it in errors.
AflocConfig parse_config(const std::string& text, const std::string& origin);
std::string config_to_string(const AflocConfig& c);

}  // namespace afloc::model
