#pragma once
/// Pretraining (SPEC §3): data, vocabulary, model, the authors' optimiser and schedule, a
/// prefetching loader, metrics.jsonl, validation loss, checkpoints and exact resume.
#include <cstdint>
#include <limits>
#include <string>

#include "afloc/train/run_config.h"

namespace afloc::train {

struct TrainOptions {
  std::string device = "cpu";
  bool resume = false;        ///< continue from the run directory's latest checkpoint
  bool progress = true;       ///< progress bar on stderr
  /// Testing aid: end the process abruptly (std::_Exit, no cleanup, like a kill) right after this
  /// optimiser step. 0 = never.
  int64_t crash_after_step = 0;
};

struct TrainResult {
  int64_t steps = 0;           ///< optimiser steps taken in total (including before a resume)
  int64_t train_samples = 0, val_samples = 0, skipped = 0;
  /// Mean training loss of the last logged window (NaN when no step ran, e.g. resuming a
  /// finished run).
  double last_loss = std::numeric_limits<double>::quiet_NaN();
  double val_loss = 0;         ///< last validation loss (NaN when not validated)
  double seconds = 0;          ///< wall time of this invocation
  double samples_per_second = 0;
  double loader_wait_fraction = 0;  ///< share of the loop spent waiting for data
  bool autocast = false;            ///< whether the steps ran under bfloat16 autocast (AutocastPlan)
  std::string final_checkpoint;     ///< directory of the final checkpoint
  int rank = 0, world = 1;          ///< this process in a distributed run
  /// Sum over parameters of sum(p * (1 + index in p)) in double: equal on every rank when the
  /// replicas agree (checked by the distributed tests).
  double parameter_checksum = 0;
};

/// Runs (or resumes) a pretraining run. Error for bad configs, data or checkpoints; a non-finite
/// loss stops the run with an Error naming the step and the batch's samples (the last checkpoint
/// stays intact); SIGINT/SIGTERM save a checkpoint and stop.
TrainResult run_training(const RunConfig& config, const TrainOptions& options);

}  // namespace afloc::train
