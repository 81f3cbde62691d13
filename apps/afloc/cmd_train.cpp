// `afloc train`: pretraining from a run config, with flags overriding its fields.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "afloc/common/error.h"
#include "afloc/common/json_number.h"
#include "afloc/common/log.h"
#include "afloc/data/dicom.h"
#include "afloc/io/model_io.h"
#include "afloc/model/config.h"
#include "afloc/train/curves.h"
#include "afloc/train/trainer.h"
#include "commands.h"

namespace afloc::cli {
namespace {

struct TrainCli {
  std::string config, preset, model_config, data, reports, format, manifest, vocab, out, optimizer, schedule, init, dicom_voi;
  train::RunConfig d;  // flag defaults shown by --help are the run defaults
  train::TrainOptions t;
  bool no_validate = false, json = false, print_config = false;
};

}  // namespace

void register_train_commands(CLI::App& app, GlobalOptions& g) {
  auto o = std::make_shared<TrainCli>();
  auto* c = app.add_subcommand("train", "Pretrain AFLoc on image-report pairs (MIMIC-CXR-JPG layout or a manifest)");
  c->add_option("-c,--config", o->config, "Run config JSON: its fields replace the defaults shown below; flags replace both");
  c->add_option("-p,--preset", o->preset, "Model preset (paper, tiny); default: the config's, else tiny");
  c->add_option("--model-config", o->model_config, "Model config JSON (overrides --preset)");
  c->add_option("-d,--data", o->data, "Data root: MIMIC-CXR-JPG folder, or image root of a manifest");
  c->add_option("--reports", o->reports,
                "MIMIC: the reports' root (MIMIC-CXR's files/p../p../s...txt), when not under --data");
  c->add_option("--format", o->format, "mimic or manifest (default: " + o->d.data.format + ")");
  c->add_option("-m,--manifest", o->manifest, "Manifest CSV/JSONL (image, report, split columns); implies --format manifest");
  c->add_option("--dicom-voi", o->dicom_voi, "DICOM to 8 bits: auto, minmax or authors (default: " + o->d.data.dicom_voi + ")")
      ->check(CLI::IsMember(data::dicom_voi_names()));
  c->add_option("--vocab", o->vocab, "vocab.txt to use (default: build a WordPiece vocab from the training reports)");
  c->add_option("-o,--out", o->out, "Run directory (default: " + o->d.out + ")");
  c->add_option("--init", o->init, "Initial weights: a model directory from afloc import (its config and vocab are used)");
  c->add_option("-e,--epochs", o->d.loop.epochs, "Epochs");
  c->add_option("-b,--batch-size", o->d.loop.batch_size, "Pairs per batch (per process)");
  c->add_option("--max-steps", o->d.loop.max_steps, "Stop after this many optimiser steps (0 = all epochs)");
  c->add_option("--lr", o->d.optim.lr, "Learning rate");
  c->add_option("--optimizer", o->optimizer, "adam or adamw (default: " + o->d.optim.name + ")");
  c->add_option("--schedule", o->schedule, "step (lr x gamma per epoch) or cosine (default: " + o->d.optim.schedule + ")");
  c->add_option("--warmup-steps", o->d.optim.warmup_steps, "Linear warm-up steps");
  c->add_option("--weight-decay", o->d.optim.weight_decay, "Weight decay");
  c->add_option("--clip", o->d.optim.clip_norm, "Gradient norm clip (0 = off)");
  c->add_option("-s,--seed", o->d.loop.seed, "Seed (initialisation, order, captions, dropout)");
  c->add_option("-w,--workers", o->d.loop.workers, "Image loading threads");
  c->add_option("--prefetch", o->d.loop.prefetch, "Batches prepared ahead");
  c->add_option("--log-every", o->d.loop.log_every, "Steps between metrics.jsonl lines");
  c->add_option("--checkpoint-every", o->d.loop.checkpoint_every, "Steps between checkpoints (0 = epoch ends only)");
  c->add_option("--keep", o->d.loop.keep_checkpoints, "Step checkpoints kept");
  c->add_flag("--gather", o->d.loop.gather_embeddings,
              "Distributed: all-gather embeddings so contrastive negatives span the global batch");
  c->add_flag("--freeze-bn", o->d.loop.freeze_batchnorm, "BatchNorm uses running statistics (small per-process batches)");
  c->add_flag("--drop-same-labels", o->d.loop.drop_same_labels,
              "Pairs whose studies have the same report labels (MIMIC's chexpert CSV, data.labels, or a manifest's "
              "labels column) are not each other's negatives. Not the authors' method");
  c->add_flag("--no-validate", o->no_validate, "Skip the validation loss after each epoch");
  c->add_flag(
      "--amp-cpu", o->d.loop.amp_cpu,
      "bfloat16 autocast on CPU as on CUDA (CPUs with AVX-512 BF16 or AMX; the CUDA default is loop.amp)");
  c->add_flag("-r,--resume", o->t.resume,
              "Continue the run in --out from its latest checkpoint, with its own settings (--epochs, --max-steps,\n"
              "--workers, --prefetch, logging, checkpointing, validation and the data location may change; other\n"
              "differences are listed, not applied)");
  c->add_flag("--print-config", o->print_config, "Print the resolved run config and exit");
  c->add_flag("--json", o->json, "Print the result as JSON");
  c->footer(
      "Defaults shown (=...) are the built-in run defaults (the authors' optimiser and schedule). With -c, the\n"
      "config's values apply instead, unless the flag is given: `afloc train -c configs/phantom_tiny.json -e 6`\n"
      "keeps that config's lr 5e-4 and cosine schedule and changes only the epochs. --print-config shows the result.");
  c->add_option("--crash-after-step", o->t.crash_after_step, "Testing: exit abruptly after this step")
      ->group("");  // hidden
  c->callback([o, c, &g] {
    apply_global(g);
    auto given = [&](const char* name) { return c->get_option(name)->count() > 0; };
    train::RunConfig cfg;
    if (!o->config.empty()) {
      cfg = train::load_run_config(o->config);
    } else if (o->t.resume) {
      // `train -o RUN --resume` continues RUN as it was started: its loop settings (epochs, steps,
      // workers), not the defaults, unless flags below change them.
      const std::string latest = io::latest_checkpoint(o->out.empty() ? cfg.out : o->out);
      if (!latest.empty()) cfg = train::load_run_config((std::filesystem::path(latest) / "run.json").string());
    }
    if (!o->model_config.empty()) cfg.model = model::load_config(o->model_config);
    else if (!o->preset.empty()) cfg.model = model::preset(o->preset);
    if (!o->data.empty()) cfg.data.root = o->data;
    if (!o->reports.empty()) cfg.data.reports = o->reports;
    if (!o->manifest.empty()) {
      // A config's MIMIC root is not the manifest's image root (e.g. `train -c run.json -m
      // prepared/manifest.csv` after `afloc prepare -c run.json`): the manifest's folder is, unless -d.
      if (cfg.data.format == "mimic" && o->data.empty()) cfg.data.root.clear();
      cfg.data.manifest = o->manifest;
      cfg.data.format = "manifest";
    }
    if (!o->format.empty()) cfg.data.format = o->format;
    if (!o->vocab.empty()) cfg.vocab.path = o->vocab;
    if (!o->dicom_voi.empty()) cfg.data.dicom_voi = o->dicom_voi;
    if (!o->out.empty()) cfg.out = o->out;
    if (!o->init.empty()) cfg.init = o->init;
    if (!o->optimizer.empty()) cfg.optim.name = o->optimizer;
    if (!o->schedule.empty()) cfg.optim.schedule = o->schedule;
    if (given("--epochs")) cfg.loop.epochs = o->d.loop.epochs;
    if (given("--batch-size")) cfg.loop.batch_size = o->d.loop.batch_size;
    if (given("--max-steps")) cfg.loop.max_steps = o->d.loop.max_steps;
    if (given("--lr")) cfg.optim.lr = o->d.optim.lr;
    if (given("--warmup-steps")) cfg.optim.warmup_steps = o->d.optim.warmup_steps;
    if (given("--weight-decay")) cfg.optim.weight_decay = o->d.optim.weight_decay;
    if (given("--clip")) cfg.optim.clip_norm = o->d.optim.clip_norm;
    if (given("--seed")) cfg.loop.seed = o->d.loop.seed;
    if (given("--workers")) cfg.loop.workers = o->d.loop.workers;
    if (given("--prefetch")) cfg.loop.prefetch = o->d.loop.prefetch;
    if (given("--log-every")) cfg.loop.log_every = o->d.loop.log_every;
    if (given("--checkpoint-every")) cfg.loop.checkpoint_every = o->d.loop.checkpoint_every;
    if (given("--keep")) cfg.loop.keep_checkpoints = o->d.loop.keep_checkpoints;
    if (o->no_validate) cfg.loop.validate = false;
    if (o->d.loop.gather_embeddings) cfg.loop.gather_embeddings = true;
    if (o->d.loop.freeze_batchnorm) cfg.loop.freeze_batchnorm = true;
    if (o->d.loop.drop_same_labels) cfg.loop.drop_same_labels = true;
    if (o->d.loop.amp_cpu) cfg.loop.amp_cpu = true;
    train::validate(cfg);
    if (o->print_config) {
      std::printf("%s\n", train::run_config_to_string(cfg).c_str());
      return;
    }
    if (!o->t.resume && cfg.data.format == "mimic" && cfg.data.root.empty()) throw Error("train: no data: give --data DIR or a config with data.root");
    o->t.device = g.device;
    o->t.progress = log::level() <= log::Level::kInfo;
    const train::TrainResult r = train::run_training(cfg, o->t);
    nlohmann::ordered_json j{{"steps", r.steps},
                             {"train_samples", r.train_samples},
                             {"val_samples", r.val_samples},
                             {"skipped", r.skipped},
                             {"last_loss", number_or_null(r.last_loss)},
                             {"val_loss", number_or_null(r.val_loss)},
                             {"seconds", r.seconds},
                             {"samples_per_second", r.samples_per_second},
                             {"loader_wait_fraction", r.loader_wait_fraction},
                             {"autocast", r.autocast},
                             {"checkpoint", r.final_checkpoint},
                             {"rank", r.rank},
                             {"world", r.world},
                             {"parameter_checksum", r.parameter_checksum}};
    if (o->json) {
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    if (r.rank != 0) return;  // rank 0 reports for the job
    std::printf("trained %lld steps on %lld pairs in %.1f s (%.1f pairs/s, %.0f%% waiting for data)\n",
                static_cast<long long>(r.steps), static_cast<long long>(r.train_samples), r.seconds,
                r.samples_per_second, 100.0 * r.loader_wait_fraction);
    if (r.loader_wait_fraction > 0.2)
      std::printf("  the model waited for images %.0f%% of the time: give more --workers, or resize the images once\n"
                  "  with `afloc prepare` and train on its manifest (docs/data.md)\n",
                  100.0 * r.loader_wait_fraction);
    std::printf("  precision           %s\n", r.autocast ? "bfloat16 autocast" : "float32");
    if (!std::isnan(r.last_loss)) std::printf("  last training loss  %.4f\n", r.last_loss);
    if (!std::isnan(r.val_loss)) std::printf("  validation loss     %.4f\n", r.val_loss);
    std::printf("  checkpoint          %s\n", r.final_checkpoint.c_str());
    std::printf("  metrics             %s/metrics.jsonl\n", cfg.out.c_str());
  });

  // `afloc curves`: one or several runs' curves in one PNG (training redraws RUN/curves.png itself).
  auto runs = std::make_shared<std::vector<std::string>>();
  auto png = std::make_shared<std::string>("curves.png");
  auto* cv = app.add_subcommand("curves", "Draw training curves (loss, validation loss, loss terms or learning rate) of one or\n"
                                          "several runs as a PNG; `afloc train` redraws RUN/curves.png at every checkpoint");
  cv->add_option("runs", *runs, "Run directories (or their metrics.jsonl)")->required();
  cv->add_option("-o,--out", *png, "PNG to write");
  cv->callback([runs, png, &g] {
    apply_global(g);
    std::vector<train::RunCurves> curves;
    for (const auto& r : *runs) {
      const std::filesystem::path p(r);
      const bool file = p.extension() == ".jsonl";
      const std::string metrics = file ? r : (p / "metrics.jsonl").string();
      std::string name = train::run_name(file ? p.parent_path().string() : r);
      if (name.empty()) name = r;  // a bare metrics.jsonl in the working directory
      curves.push_back(train::read_curves(metrics, name));
      if (curves.back().step.empty()) throw Error(metrics + ": no training loss logged yet");
      if (curves.back().bad_lines > 0)
        log::warn(metrics + ": " + std::to_string(curves.back().bad_lines) + " line(s) not read (cut by a kill?)");
    }
    train::plot_curves(curves, *png);
    std::printf("curves of %zu run(s) -> %s\n", curves.size(), png->c_str());
  });
}

}  // namespace afloc::cli
