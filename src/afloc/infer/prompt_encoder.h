#pragma once
/// Prompt embeddings (the report vector t_r of SPEC §4, unnormalised) computed once per prompt:
/// batched through the text encoder, kept in memory and, optionally, in an on-disk cache keyed by
/// the text encoder's weights and the prompt's token ids (so a changed vocab, cleaning or weight
/// file never serves a stale vector).
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "afloc/model/afloc_model.h"

namespace afloc::infer {

/// The default on-disk cache folder: $AFLOC_CACHE_DIR, else $XDG_CACHE_HOME/afloc, else
/// ~/.cache/afloc ("" when none of them is set).
std::string default_prompt_cache_dir();

class PromptEncoder {
 public:
  /// cache_dir "" keeps vectors in memory only. The disk cache file is
  /// cache_dir/prompts-<16 hex digits of the text encoder's weight hash>.bin.
  explicit PromptEncoder(model::AflocModel& net, std::string cache_dir = "", int64_t batch = 64);

  /// (N, D) float on the model's device, one row per prompt (in order; duplicates allowed).
  torch::Tensor encode(const std::vector<std::string>& prompts);
  /// (D) for one prompt.
  torch::Tensor encode(const std::string& prompt) { return encode(std::vector<std::string>{prompt})[0]; }

  /// Prompts encoded by the network so far / served from vectors held before the call (memory or
  /// the disk cache) / records read from disk.
  int64_t computed() const { return computed_; }
  int64_t hits() const { return hits_; }
  int64_t loaded_from_disk() const { return from_disk_; }
  /// The cache file ("" without a disk cache).
  const std::string& cache_file() const { return file_; }

 private:
  void load_disk_cache();
  void append_disk_cache(const std::vector<std::vector<int32_t>>& keys, const torch::Tensor& vectors);

  model::AflocModel& net_;
  std::string file_;
  int64_t batch_;
  std::map<std::vector<int32_t>, torch::Tensor> memory_;  // token ids -> (D) CPU float
  int64_t computed_ = 0, hits_ = 0, from_disk_ = 0;
  bool disk_loaded_ = false;
};

/// A 64-bit hash of a module's parameters and buffers (names, shapes, dtypes and bytes).
uint64_t weights_hash(const torch::nn::Module& module);

}  // namespace afloc::infer
