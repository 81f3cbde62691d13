#include "afloc/io/model_io.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "afloc/common/error.h"
#include "afloc/io/safetensors.h"
#include "afloc/io/tensor_file.h"
#include "afloc/io/torch_checkpoint.h"

namespace fs = std::filesystem;

namespace afloc::io {
namespace {

// Tensors from a state-dict file of any kind we read: safetensors, torch zip (plain dict or
// OrderedDict, with or without foreign objects).
TensorMap read_weights(const std::string& path, std::vector<std::string>* foreign = nullptr) {
  if (fs::path(path).extension() == ".safetensors") return load_safetensors(path).tensors;
  CheckpointContents c = read_torch_checkpoint(path);
  if (foreign) *foreign = c.foreign;
  return c.tensors;
}

// Keeps entries whose name starts with one of the prefixes (prefix removed); others are dropped.
TensorMap rename_prefix(const TensorMap& in, const std::vector<std::string>& strip, const std::vector<std::string>& drop) {
  TensorMap out;
  for (const auto& [k, v] : in) {
    bool dropped = false;
    for (const auto& d : drop)
      if (k.rfind(d, 0) == 0) dropped = true;
    if (dropped) continue;
    std::string name = k;
    for (const auto& s : strip)
      if (name.rfind(s, 0) == 0) {
        name = name.substr(s.size());
        break;
      }
    out[name] = v;
  }
  return out;
}

}  // namespace

std::string ImportReport::summary() const {
  std::string s = load.summary();
  if (!foreign.empty()) {
    s += "\n" + std::to_string(foreign.size()) + " foreign objects left unread:";
    for (const auto& f : foreign) s += " " + f;
  }
  return s;
}

void save_model_dir(const std::string& dir, model::AflocModel& net, const text::Vocab& vocab,
                    const std::map<std::string, std::string>& metadata) {
  fs::create_directories(dir);
  write_file_atomic((fs::path(dir) / "config.json").string(), model::config_to_string(net->config()) + "\n");
  vocab.save((fs::path(dir) / "vocab.txt").string());
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = "afloc-model-1";
  save_safetensors((fs::path(dir) / "model.safetensors").string(), state_dict(*net), meta);
}

std::string latest_checkpoint(const std::string& run_dir) {
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  const fs::path latest = dir / "latest.txt";
  if (!path_exists(latest.string())) return "";
  std::string name = read_file(latest.string());
  while (!name.empty() && (name.back() == '\n' || name.back() == '\r')) name.pop_back();
  const fs::path p = dir / name;
  std::error_code ec;
  if (!fs::is_directory(p, ec)) throw Error(latest.string() + ": names " + name + ", which does not exist");
  return p.string();
}

std::string weights_file_in(const std::string& dir) {
  for (const char* name : {"model.safetensors", "model.pt"}) {
    const fs::path p = fs::path(dir) / name;
    if (path_exists(p.string())) return p.string();
  }
  return "";
}

LoadedModel load_model(const std::string& path_in, const torch::Device& device) {
  return with_context("loading model " + path_in, [&] {
    std::string path = path_in;
    if (!path_exists(path)) throw Error("no such file or directory");
    if (const std::string latest = latest_checkpoint(path); !latest.empty()) path = latest;
    const fs::path d(path);
    LoadedModel m;
    m.source = path;
    const std::string weights = weights_file_in(path);
    if (weights.empty()) {
      throw Error("neither model.safetensors (a model directory) nor model.pt (a training checkpoint) in " + path);
    }
    // A model directory's config is config.json, a training checkpoint's model.json.
    const std::string config = (d / (fs::path(weights).extension() == ".safetensors" ? "config.json" : "model.json")).string();
    if (!path_exists(config)) throw Error("missing " + config);
    if (!path_exists((d / "vocab.txt").string())) throw Error("missing " + (d / "vocab.txt").string());
    m.config = model::load_config(config);
    m.vocab = text::Vocab::load((d / "vocab.txt").string());
    m.model = model::AflocModel(m.config, m.vocab);
    load_state_dict(*m.model, read_weights(weights), weights);
    m.model->to(device);
    m.model->eval();
    return m;
  });
}

ImportReport import_lightning(model::AflocModel& net, const std::string& ckpt_path, bool allow_partial) {
  ImportReport r;
  const TensorMap all = read_weights(ckpt_path, &r.foreign);
  TensorMap sd = select_prefix(all, "state_dict.");
  if (sd.empty()) throw Error(ckpt_path + ": no state_dict tensors (is this a Lightning checkpoint?)");
  // The authors load with k.split("afloc.")[-1].
  sd = rename_prefix(sd, {"afloc."}, {});
  r.load = load_state_dict(*net, sd, ckpt_path, "", /*strict=*/!allow_partial);
  return r;
}

model::BertConfig read_hf_bert_config(const std::string& path) {
  return with_context(path, [&] {
    const auto j = nlohmann::json::parse(read_file(path));
    model::BertConfig c;
    auto get = [&](const char* key, auto& field) {
      if (j.contains(key)) field = j.at(key).get<std::decay_t<decltype(field)>>();
    };
    get("vocab_size", c.vocab_size);
    get("hidden_size", c.hidden_size);
    get("num_hidden_layers", c.num_layers);
    get("num_attention_heads", c.num_heads);
    get("intermediate_size", c.intermediate_size);
    get("max_position_embeddings", c.max_position_embeddings);
    get("type_vocab_size", c.type_vocab_size);
    get("layer_norm_eps", c.layer_norm_eps);
    get("hidden_dropout_prob", c.hidden_dropout);
    get("attention_probs_dropout_prob", c.attention_dropout);
    get("pad_token_id", c.pad_token_id);
    if (j.contains("hidden_act") && j.at("hidden_act") != "gelu") {
      throw Error("hidden_act " + j.at("hidden_act").dump() + ": only gelu (erf) is implemented");
    }
    return c;
  });
}

ImportReport import_hf_bert(model::AflocModel& net, const std::string& dir) {
  const fs::path d(dir);
  std::string weights;
  for (const char* f : {"model.safetensors", "pytorch_model.bin"})
    if (path_exists((d / f).string())) {
      weights = (d / f).string();
      break;
    }
  if (weights.empty()) throw Error(dir + ": no model.safetensors or pytorch_model.bin");
  ImportReport r;
  // Pre-training heads (cls.*) are not part of BertModel.
  const TensorMap sd = rename_prefix(read_weights(weights, &r.foreign), {"bert."}, {"cls."});
  r.load = load_state_dict(*net->text_encoder->model, sd, weights, "", /*strict=*/false);
  // position_ids is a buffer newer checkpoints omit; anything else missing is an error.
  std::vector<std::string> missing;
  for (const auto& m : r.load.missing)
    if (m.find("position_ids") == std::string::npos) missing.push_back(m);
  if (!missing.empty() || !r.load.mismatched.empty()) throw Error(weights + ": does not fit the model's BERT:\n" + r.load.summary());
  return r;
}

ImportReport import_torchvision_resnet(model::AflocModel& net, const std::string& path) {
  ImportReport r;
  const TensorMap sd = rename_prefix(read_weights(path, &r.foreign), {"module."}, {"fc."});
  r.load = load_state_dict(*net->img_encoder->model, sd, path, "", /*strict=*/false);
  if (!r.load.missing.empty() || !r.load.mismatched.empty()) {
    throw Error(path + ": does not fit the model's ResNet:\n" + r.load.summary());
  }
  return r;
}

}  // namespace afloc::io
