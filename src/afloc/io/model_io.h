#pragma once
/// afloc's model format and every way to get a model: a model directory (config.json, vocab.txt,
/// model.safetensors), a training checkpoint (model.pt, model.json, vocab.txt), a run directory (its
/// latest checkpoint), and imports of the authors' Lightning checkpoints, Hugging Face BERT
/// directories and torchvision ResNet state dicts.
#include <torch/torch.h>

#include <map>
#include <string>

#include "afloc/io/state_dict.h"
#include "afloc/model/afloc_model.h"

namespace afloc::io {

struct LoadedModel {
  model::AflocConfig config;
  text::Vocab vocab;
  model::AflocModel model{nullptr};
  std::string source;  ///< the directory or file it came from
};

/// Writes DIR/config.json, DIR/vocab.txt and DIR/model.safetensors (metadata: format, source).
void save_model_dir(const std::string& dir, model::AflocModel& net, const text::Vocab& vocab,
                    const std::map<std::string, std::string>& metadata = {});

/// The newest checkpoint directory of a run (named by checkpoints/latest.txt), "" when the run has
/// none; Error when latest.txt names a directory that does not exist.
std::string latest_checkpoint(const std::string& run_dir);

/// The weights file of a model directory (DIR/model.safetensors) or of a training checkpoint
/// directory (DIR/model.pt), "" when DIR holds neither.
std::string weights_file_in(const std::string& dir);

/// Loads a model directory, a training checkpoint directory or a run directory, in eval mode on
/// device. Error naming the path and the missing file, or the tensors that do not fit the config.
LoadedModel load_model(const std::string& path, const torch::Device& device);

/// What an import found.
struct ImportReport {
  LoadReport load;                    ///< per-name loading report against the model
  std::vector<std::string> foreign;  ///< unresolved globals left inert (Lightning checkpoints)
  std::string summary() const;
};

/// The authors' Lightning checkpoint: "state_dict" entries with the "afloc." prefix stripped (as
/// their loader does) into a model of `config` (vocab_size must match the vocab). Strict unless
/// allow_partial.
ImportReport import_lightning(model::AflocModel& net, const std::string& ckpt_path, bool allow_partial);

/// A Hugging Face BERT directory (pytorch_model.bin or model.safetensors; "bert." prefixes and the
/// pre-training heads are dropped) into text_encoder.model. Returns the report for those weights.
ImportReport import_hf_bert(model::AflocModel& net, const std::string& dir);

/// A torchvision ResNet state dict (.pth zip, possibly an OrderedDict, or .safetensors; "fc.*"
/// dropped) into img_encoder.model.
ImportReport import_torchvision_resnet(model::AflocModel& net, const std::string& path);

/// Reads a Hugging Face BERT config.json into BertConfig fields (vocab_size, hidden_size, layers,
/// heads, intermediate, max positions, type vocab, eps, dropouts). Error naming the file and key.
model::BertConfig read_hf_bert_config(const std::string& path);

}  // namespace afloc::io
