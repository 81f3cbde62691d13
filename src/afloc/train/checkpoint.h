#pragma once
/// Loading a model trained by `afloc train` from one of its checkpoint directories
/// (model.pt, model.json, vocab.txt).
#include <torch/torch.h>

#include <string>

#include "afloc/model/afloc_model.h"

namespace afloc::train {

struct TrainedModel {
  model::AflocConfig config;
  text::Vocab vocab;
  model::AflocModel model{nullptr};
};

/// Loads the checkpoint onto device in eval mode. Error naming the directory and the file for a
/// missing file or a state dict that does not fit the saved config.
TrainedModel load_trained_model(const std::string& checkpoint_dir, const torch::Device& device);

}  // namespace afloc::train
