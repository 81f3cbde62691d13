#pragma once
/// A pretraining run's configuration: model, data, vocabulary, optimiser, schedule and loop
/// settings. Plain structs with the authors' defaults (SPEC §3), strict JSON, saved next to every
/// checkpoint so any run can be reproduced or resumed.
#include <cstdint>
#include <string>
#include <vector>

#include "afloc/model/config.h"

namespace afloc::train {

struct DataConfig {
  std::string format = "mimic";  ///< "mimic" (MIMIC-CXR-JPG layout) or "manifest" (CSV/JSONL)
  std::string root;              ///< MIMIC root, or the manifest's image root ("" = its folder)
  /// MIMIC: where the reports are, files/p../p{subject}/s{study}.txt ("" = root). MIMIC-CXR-JPG
  /// ships none; they come with MIMIC-CXR (mimic-cxr-reports.zip), often unpacked elsewhere.
  std::string reports;
  std::string manifest;          ///< manifest path (format "manifest")
  std::vector<std::string> train_splits = {"train"};
  std::vector<std::string> val_splits = {"validate"};
  std::vector<std::string> views = {"PA", "AP"};  ///< frontal views only, as the authors train
  /// MIMIC: a report with neither FINDINGS nor IMPRESSION gives its last paragraph (MIMIC-CXR's
  /// section parser's fallback) instead of being skipped. Off: the authors train on the two sections.
  bool last_paragraph = false;
  /// How DICOM stored values become 8 bits: "auto" (SPEC §4: rescale, VOI window else min-max,
  /// MONOCHROME1 inverted), "minmax" or "authors" (the authors' read_from_dicom).
  std::string dicom_voi = "auto";
  int64_t cache_mb = 4096;  ///< keep resized images in memory up to this budget (0 = never)
  /// Report labels per study, for loop.drop_same_labels: a study_id-keyed CSV such as MIMIC-CXR-JPG's
  /// mimic-cxr-2.0.0-chexpert.csv or -negbio.csv ("" = MIMIC's chexpert CSV under root when
  /// loop.drop_same_labels is on). A manifest gives them in its own `labels` column instead.
  std::string labels;
};

struct VocabConfig {
  std::string path;           ///< vocab.txt; "" = build a WordPiece vocab from the training reports
  int64_t size = 4000;        ///< built vocab size
  int64_t min_frequency = 2;  ///< built vocab: merge threshold
};

struct OptimConfig {
  std::string name = "adam";      ///< "adam" (the authors') or "adamw"
  double lr = 2e-5;
  double beta1 = 0.5, beta2 = 0.999;
  double weight_decay = 1e-6;
  std::string schedule = "step";  ///< "step": lr x gamma after every epoch; "cosine": warm-up + cosine
  double gamma = 0.9;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;      ///< cosine floor as a fraction of lr
  double clip_norm = 0.25;        ///< gradient norm clipping (0 = off)
};

struct LoopConfig {
  int64_t epochs = 5;
  int64_t batch_size = 32;       ///< per process
  int64_t max_steps = 0;         ///< stop after this many optimiser steps (0 = all epochs)
  uint64_t seed = 0;
  int workers = 2;               ///< image loading threads
  int prefetch = 4;              ///< batches prepared ahead
  int64_t log_every = 10;        ///< steps between metrics.jsonl lines
  int64_t checkpoint_every = 500;  ///< steps between checkpoints (0 = only at epoch ends and the end)
  int64_t keep_checkpoints = 2;  ///< step checkpoints kept (the final one is always kept)
  bool validate = true;          ///< validation loss after every epoch
  bool amp = true;               ///< bfloat16 autocast on CUDA
  bool amp_cpu = false;          ///< bfloat16 autocast on CPU too (CPUs with fast bf16)
  bool gather_embeddings = false;  ///< distributed: contrastive negatives from the global batch
  bool freeze_batchnorm = false;   ///< BatchNorm layers use running statistics (small per-process batches)
  /// Pairs whose studies carry the same report labels (data.labels) are not contrasted as negatives
  /// of each other: each image's softmax runs over its own caption and the captions that say
  /// something else (false negatives left out, e.g. two "No acute cardiopulmonary process."
  /// studies). Not in the authors' method (off by default; docs/training.md, "Session 26").
  bool drop_same_labels = false;
};

struct RunConfig {
  model::AflocConfig model = model::preset("tiny");
  DataConfig data;
  VocabConfig vocab;
  OptimConfig optim;
  LoopConfig loop;
  std::string out = "runs/afloc";  ///< run directory: metrics.jsonl, checkpoints/, run.json
  /// Initial weights: a model directory (afloc import, e.g. Bio_ClinicalBERT + ImageNet ResNet-50),
  /// checkpoint or run; its config and vocabulary replace `model` and `vocab`. "" = random init.
  std::string init;
};

/// Strict parsing: unknown keys and wrong types raise Error naming the key path. "model" may be a
/// full config or {"preset": "tiny", ...overrides}.
RunConfig parse_run_config(const std::string& json_text, const std::string& origin);
RunConfig load_run_config(const std::string& path);
std::string run_config_to_string(const RunConfig& c);
/// What a resume takes from the command rather than from the checkpoint: the loop's length
/// (epochs, max_steps), the loader's resources (workers, prefetch, data.cache_mb), what is logged,
/// saved and kept (log_every, checkpoint_every, keep_checkpoints, validate) and where things are
/// now (out, data.root, data.reports, data.manifest). A manifest asked for a run that read
/// MIMIC-CXR-JPG switches it to the manifest, with the asked data.root ("" = the manifest's
/// folder): `afloc prepare`'s manifest of the same data continues the run exactly. Everything
/// else is the run's own.
void apply_resume_settings(const RunConfig& asked, RunConfig& saved);
/// Settings of `asked` that differ from the checkpoint's `saved` and that a resume keeps from the
/// checkpoint, as "key: VALUE given, VALUE kept" (dotted JSON keys, in config order). Derived
/// fields are not listed: model.bert.vocab_size (from the vocabulary), and the model when `asked`
/// starts from --init weights (their config is the model's).
std::vector<std::string> resume_ignored_settings(const RunConfig& asked, const RunConfig& saved);
/// Error naming the field for values that cannot work (batch < 2, lr <= 0, unknown names, ...).
void validate(const RunConfig& c);

/// The study-keyed label CSV a MIMIC run reads (data.labels, else MIMIC's chexpert CSV under the root
/// when loop.drop_same_labels asks for labels; "" when none is needed). Error naming the folder
/// when drop_same_labels has no CSV to read.
std::string labels_csv(const RunConfig& c);

}  // namespace afloc::train
