#include "afloc/model/config.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "afloc/common/error.h"

namespace afloc::model {
namespace {

using nlohmann::json;

// Reads j[key] into out when present, checking the type; records the key as known.
template <typename T>
void get(const json& j, const char* key, T& out, const std::string& path,
         std::vector<std::string>& known) {
  known.emplace_back(key);
  auto it = j.find(key);
  if (it == j.end()) return;
  try {
    out = it->template get<T>();
  } catch (const json::exception& e) {
    throw Error(path + "." + key + ": wrong type (" + it->dump() + "): " + e.what());
  }
}

void check_object(const json& j, const std::string& path) {
  if (!j.is_object()) throw Error(path + ": expected a JSON object, got " + j.dump());
}

void reject_unknown(const json& j, const std::vector<std::string>& known, const std::string& path) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) == known.end()) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      throw Error(path + "." + it.key() + ": unknown key (known: " + list + ")");
    }
  }
}

void parse_resnet(const json& j, ResNetConfig& c, const std::string& path) {
  check_object(j, path);
  std::vector<std::string> known;
  get(j, "depth", c.depth, path, known);
  get(j, "width", c.width, path, known);
  get(j, "dilate_layer3", c.dilate_layer3, path, known);
  reject_unknown(j, known, path);
}

void parse_bert(const json& j, BertConfig& c, const std::string& path) {
  check_object(j, path);
  std::vector<std::string> known;
  get(j, "vocab_size", c.vocab_size, path, known);
  get(j, "hidden_size", c.hidden_size, path, known);
  get(j, "num_layers", c.num_layers, path, known);
  get(j, "num_heads", c.num_heads, path, known);
  get(j, "intermediate_size", c.intermediate_size, path, known);
  get(j, "max_position_embeddings", c.max_position_embeddings, path, known);
  get(j, "type_vocab_size", c.type_vocab_size, path, known);
  get(j, "layer_norm_eps", c.layer_norm_eps, path, known);
  get(j, "hidden_dropout", c.hidden_dropout, path, known);
  get(j, "attention_dropout", c.attention_dropout, path, known);
  get(j, "pad_token_id", c.pad_token_id, path, known);
  reject_unknown(j, known, path);
}

void parse_text(const json& j, TextConfig& c, const std::string& path) {
  check_object(j, path);
  std::vector<std::string> known;
  get(j, "max_tokens", c.max_tokens, path, known);
  get(j, "last_n_layers", c.last_n_layers, path, known);
  get(j, "lowercase", c.lowercase, path, known);
  get(j, "strip_accents", c.strip_accents, path, known);
  reject_unknown(j, known, path);
}

void parse_loss(const json& j, LossConfig& c, const std::string& path) {
  check_object(j, path);
  std::vector<std::string> known;
  get(j, "use_word", c.use_word, path, known);
  get(j, "use_sentence", c.use_sentence, path, known);
  get(j, "use_report", c.use_report, path, known);
  get(j, "word_weight", c.word_weight, path, known);
  get(j, "sentence_weight", c.sentence_weight, path, known);
  get(j, "report_weight", c.report_weight, path, known);
  get(j, "temp1", c.temp1, path, known);
  get(j, "temp2", c.temp2, path, known);
  get(j, "temp3", c.temp3, path, known);
  get(j, "skip_negated", c.skip_negated, path, known);
  get(j, "region_report_weight", c.region_report_weight, path, known);
  get(j, "region_report_gamma", c.region_report_gamma, path, known);
  get(j, "shallow_sentence_weight", c.shallow_sentence_weight, path, known);
  reject_unknown(j, known, path);
}

void parse_root(const json& j, AflocConfig& c, const std::string& path) {
  check_object(j, path);
  std::vector<std::string> known{"preset"};
  get(j, "name", c.name, path, known);
  get(j, "image_size", c.image_size, path, known);
  get(j, "upsample_size", c.upsample_size, path, known);
  get(j, "deep_layer", c.deep_layer, path, known);
  get(j, "align_cells", c.align_cells, path, known);
  get(j, "dense_map", c.dense_map, path, known);
  get(j, "heatmap_levels", c.heatmap_levels, path, known);
  known.insert(known.end(), {"resnet", "bert", "text", "loss"});
  if (j.contains("resnet")) parse_resnet(j.at("resnet"), c.resnet, path + ".resnet");
  if (j.contains("bert")) parse_bert(j.at("bert"), c.bert, path + ".bert");
  if (j.contains("text")) parse_text(j.at("text"), c.text, path + ".text");
  if (j.contains("loss")) parse_loss(j.at("loss"), c.loss, path + ".loss");
  reject_unknown(j, known, path);
}

// Output side of a k=3/s=2/p=1 convolution or max-pool (torch floor arithmetic).
int64_t down2(int64_t n) { return (n + 2 - 3) / 2 + 1; }

}  // namespace

void AflocConfig::validate() const {
  auto bad = [&](const std::string& field, const std::string& value, const std::string& why) {
    throw Error("config '" + name + "': " + field + " = " + value + ": " + why);
  };
  if (resnet.depth != 10 && resnet.depth != 18 && resnet.depth != 34 && resnet.depth != 50) {
    bad("resnet.depth", std::to_string(resnet.depth), "expected 10, 18, 34 or 50");
  }
  if (resnet.width < 4) bad("resnet.width", std::to_string(resnet.width), "must be >= 4");
  if (image_size < 32) bad("image_size", std::to_string(image_size), "must be >= 32");
  if (upsample_size != 0 && upsample_size < 32) {
    bad("upsample_size", std::to_string(upsample_size), "must be 0 (none) or >= 32");
  }
  if (deep_layer != 2 && deep_layer != 3) bad("deep_layer", std::to_string(deep_layer), "expected 2 or 3");
  if (bert.hidden_size <= 0 || bert.num_heads <= 0 || bert.hidden_size % bert.num_heads != 0) {
    bad("bert.num_heads", std::to_string(bert.num_heads),
        "must divide bert.hidden_size = " + std::to_string(bert.hidden_size));
  }
  if (bert.num_layers < 1) bad("bert.num_layers", std::to_string(bert.num_layers), "must be >= 1");
  if (bert.vocab_size < 5) bad("bert.vocab_size", std::to_string(bert.vocab_size), "too small");
  if (text.max_tokens < 3 || text.max_tokens > bert.max_position_embeddings) {
    bad("text.max_tokens", std::to_string(text.max_tokens),
        "must be in [3, bert.max_position_embeddings = " +
            std::to_string(bert.max_position_embeddings) + "]");
  }
  if (text.last_n_layers < 1 || text.last_n_layers > bert.num_layers + 1) {
    bad("text.last_n_layers", std::to_string(text.last_n_layers),
        "must be in [1, bert.num_layers + 1 = " + std::to_string(bert.num_layers + 1) + "]");
  }
  if (!loss.use_word && !loss.use_sentence && !loss.use_report) {
    bad("loss", "all terms off", "at least one of use_word/use_sentence/use_report must be on");
  }
  if (!(loss.region_report_weight >= 0)) {
    bad("loss.region_report_weight", json(loss.region_report_weight).dump(), "must be >= 0 (0 = off)");
  }
  if (!(loss.region_report_gamma > 0)) {
    bad("loss.region_report_gamma", json(loss.region_report_gamma).dump(), "must be > 0");
  }
  if (!(loss.shallow_sentence_weight >= 0)) {
    bad("loss.shallow_sentence_weight", json(loss.shallow_sentence_weight).dump(), "must be >= 0 (0 = off)");
  }
  const auto& levels = heatmap_level_names();
  if (std::find(levels.begin(), levels.end(), heatmap_levels) == levels.end()) {
    bad("heatmap_levels", "'" + heatmap_levels + "'", "expected deep, shallow or both");
  }
  if (deep_side() < 1) bad("image_size", std::to_string(image_size), "too small for the ResNet");
}

int64_t AflocConfig::shallow_side() const {
  const int64_t in = upsample_size > 0 ? upsample_size : image_size;
  return down2(down2(down2(in)));  // conv1, maxpool, layer2
}

int64_t AflocConfig::deep_side() const {
  // layer2's map (stride 8) or layer3's (one more halving, unless layer3 is dilated)
  const int64_t network = network_stride() == 8 ? shallow_side() : down2(shallow_side());
  return dense_map ? 2 * network : network;
}

std::vector<std::string> preset_names() { return {"paper", "tiny"}; }

const std::vector<std::string>& heatmap_level_names() {
  static const std::vector<std::string> names{"deep", "shallow", "both"};
  return names;
}

AflocConfig preset(const std::string& name) {
  AflocConfig c;
  if (name == "paper") {
    c.name = "paper";
    return c;
  }
  if (name == "tiny") {
    c.name = "tiny";
    // ResNet-10: trained from scratch on a few thousand pairs, ResNet-18's layer3 cells see the
    // whole 160 px input and its sentence maps keep a location prior (docs/training.md).
    c.resnet.depth = 10;
    c.align_cells = true;
    c.resnet.width = 32;
    c.image_size = 128;
    c.upsample_size = 160;
    c.bert.vocab_size = 2000;
    c.bert.hidden_size = 128;
    c.bert.num_layers = 4;
    c.bert.num_heads = 4;
    c.bert.intermediate_size = 512;
    c.bert.max_position_embeddings = 128;
    c.text.max_tokens = 97;
    c.text.lowercase = true;
    return c;
  }
  std::string names;
  for (const auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
  throw Error("unknown model preset '" + name + "' (known: " + names + ")");
}

void to_json(nlohmann::json& j, const AflocConfig& c) {
  j = json{
      {"name", c.name},
      {"image_size", c.image_size},
      {"upsample_size", c.upsample_size},
      {"deep_layer", c.deep_layer},
      {"align_cells", c.align_cells},
      {"dense_map", c.dense_map},
      {"heatmap_levels", c.heatmap_levels},
      {"resnet", {{"depth", c.resnet.depth}, {"width", c.resnet.width}, {"dilate_layer3", c.resnet.dilate_layer3}}},
      {"bert",
       {{"vocab_size", c.bert.vocab_size},
        {"hidden_size", c.bert.hidden_size},
        {"num_layers", c.bert.num_layers},
        {"num_heads", c.bert.num_heads},
        {"intermediate_size", c.bert.intermediate_size},
        {"max_position_embeddings", c.bert.max_position_embeddings},
        {"type_vocab_size", c.bert.type_vocab_size},
        {"layer_norm_eps", c.bert.layer_norm_eps},
        {"hidden_dropout", c.bert.hidden_dropout},
        {"attention_dropout", c.bert.attention_dropout},
        {"pad_token_id", c.bert.pad_token_id}}},
      {"text",
       {{"max_tokens", c.text.max_tokens},
        {"last_n_layers", c.text.last_n_layers},
        {"lowercase", c.text.lowercase},
        {"strip_accents", c.text.strip_accents}}},
      {"loss",
       {{"use_word", c.loss.use_word},
        {"use_sentence", c.loss.use_sentence},
        {"use_report", c.loss.use_report},
        {"word_weight", c.loss.word_weight},
        {"sentence_weight", c.loss.sentence_weight},
        {"report_weight", c.loss.report_weight},
        {"temp1", c.loss.temp1},
        {"temp2", c.loss.temp2},
        {"temp3", c.loss.temp3},
        {"skip_negated", c.loss.skip_negated},
        {"region_report_weight", c.loss.region_report_weight},
        {"region_report_gamma", c.loss.region_report_gamma},
        {"shallow_sentence_weight", c.loss.shallow_sentence_weight}}},
  };
}

void from_json(const nlohmann::json& j, AflocConfig& c) {
  if (j.is_object() && j.contains("preset")) {
    if (!j.at("preset").is_string()) throw Error("config.preset: expected a string");
    c = preset(j.at("preset").get<std::string>());
  }
  parse_root(j, c, "config");
  c.validate();
}

AflocConfig parse_config(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(origin + ": invalid JSON: " + e.what());
  }
  return with_context(origin, [&] {
    AflocConfig c;
    from_json(j, c);
    return c;
  });
}

AflocConfig load_config(const std::string& path) { return parse_config(read_file(path), path); }

std::string config_to_string(const AflocConfig& c) {
  json j;
  to_json(j, c);
  return j.dump(2);
}

}  // namespace afloc::model
