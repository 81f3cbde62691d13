#pragma once
/// The pretraining batch loader: worker threads decode, resize and tokenize batches ahead of the
/// model (bounded prefetch). Every random choice derives from (seed, epoch, sample), so batches
/// are the same whatever the number of workers and after a resume; in a distributed run each rank
/// takes its slice of every global batch (a sharded sampler).
#include <torch/torch.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "afloc/data/datasets.h"
#include "afloc/data/image.h"
#include "afloc/model/afloc_model.h"

namespace afloc::train {

struct LoaderOptions {
  int64_t batch_size = 32;   ///< per rank
  int64_t image_size = 224;
  int workers = 2;
  int prefetch = 4;
  uint64_t seed = 0;
  bool shuffle = true;       ///< a new permutation every epoch (validation: false)
  bool random_captions = true;  ///< sample sentence subsets (training); false = seeded by sample only
  int rank = 0, world = 1;
  int64_t cache_bytes = int64_t{4} << 30;  ///< resized images kept in memory up to this budget
  data::ImageReadOptions read;             ///< decode limit, DICOM conversion
};

/// One batch, on the CPU.
struct Batch {
  int64_t epoch = 0, index = 0;  ///< batch index within the epoch
  torch::Tensor images;          ///< (B, 3, S, S) float in [-1, 1]
  model::TokenBatch tokens;      ///< (B, T)
  std::vector<int64_t> samples;  ///< dataset indices
};

/// Shared, read-only inputs of a loader: samples with their cleaned sentences.
struct PairData {
  std::vector<data::Sample> samples;
  std::vector<std::vector<std::string>> sentences;  ///< cleaned (SPEC §2), non-empty
};

/// Cleans every report; samples left without a usable sentence are skipped into `skipped`.
PairData prepare_pairs(const std::vector<data::Sample>& samples, data::SkipLog& skipped);

class BatchLoader {
 public:
  /// tokenize turns captions into tokens (the model's tokenizer; must be thread-safe).
  BatchLoader(const PairData& data, LoaderOptions options,
              std::function<model::TokenBatch(const std::vector<std::string>&)> tokenize);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  /// Full batches per epoch for this rank (drop_last over the global batch).
  int64_t batches_per_epoch() const;
  /// Starts producing epoch `epoch` from batch `first_batch` (resume).
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  /// The next batch of the current epoch in order, or false at its end.
  bool next(Batch& out);
  /// The sample order of an epoch (global; before sharding).
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  /// Images that failed to decode (replaced by another sample), with the first error.
  int64_t bad_images() const;
  /// Time the consumer waited for batches (seconds), since construction.
  double wait_seconds() const { return wait_seconds_; }

 private:
  void stop_workers();
  void worker_loop();
  Batch build(int64_t epoch, int64_t index);
  data::Gray8 load_image(int64_t sample);

  const PairData& data_;
  LoaderOptions o_;
  std::function<model::TokenBatch(const std::vector<std::string>&)> tokenize_;
  std::vector<int64_t> order_;
  int64_t epoch_ = 0, next_build_ = 0, next_take_ = 0, end_ = 0;
  std::map<int64_t, Batch> ready_;
  std::string error_;
  bool stop_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  // Resized-image cache (shared by workers; each slot written once under its stripe's lock).
  std::vector<data::Gray8> cache_;
  std::vector<char> cached_;
  std::mutex cache_mu_[64];
  int64_t cache_limit_ = 0;
  mutable std::mutex bad_mu_;
  std::map<int64_t, std::string> bad_;
  double wait_seconds_ = 0;
};

}  // namespace afloc::train
