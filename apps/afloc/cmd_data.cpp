// Data subcommands: `afloc synth` (the phantom world) and `afloc prepare` (a pretraining set
// resized offline).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "afloc/common/error.h"
#include "afloc/common/log.h"
#include "afloc/common/strings.h"
#include "afloc/common/threads.h"
#include "afloc/data/phantom_writer.h"
#include "afloc/data/prepare.h"
#include "afloc/io/model_io.h"
#include "afloc/model/config.h"
#include "afloc/train/run_config.h"
#include "commands.h"
#include "inputs.h"

namespace afloc::cli {
namespace {

struct SynthCliOptions {
  data::phantom::SynthOptions synth;
  bool unseen = false;
  std::string contact_sheet;
  int64_t sheet_n = 16;
  bool json = false;
};

struct PrepareCli {
  std::string config, data, reports, manifest, root, out, dicom_voi;
  std::vector<std::string> splits, views;
  int64_t size = 0;
  bool last_paragraph = false, json = false;
};

std::string absolute(const std::string& p) {
  return p.empty() ? "" : std::filesystem::absolute(p).lexically_normal().string();
}

std::string storage(int64_t bytes) {
  char buf[32];
  if (bytes >= 1000000000) std::snprintf(buf, sizeof buf, "%.2f GB", static_cast<double>(bytes) / 1e9);
  else if (bytes >= 1000000) std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / 1e6);
  else std::snprintf(buf, sizeof buf, "%.0f kB", static_cast<double>(bytes) / 1e3);
  return buf;
}

void register_prepare(CLI::App& app, GlobalOptions& g) {
  auto o = std::make_shared<PrepareCli>();
  auto* c = app.add_subcommand(
      "prepare",
      "Resize a pretraining set once, as the loader would every epoch: PNGs at the model's input size and a\n"
      "manifest to train on (`afloc train -m OUT/manifest.csv` reads the same pairs in the same order)");
  c->add_option("-o,--out", o->out, "Output folder: manifest.csv, prepare.json, images/ (resumable)")->required();
  c->add_option("-c,--config", o->config,
                "Run config JSON: its data settings (root, reports, manifest, splits, views) and model image_size\n"
                "are the defaults; flags replace them");
  c->add_option("-d,--data", o->data, "MIMIC-CXR-JPG root (files/ and the mimic-cxr-2.0.0-*.csv files)");
  c->add_option("--reports", o->reports, "MIMIC: the reports' root (MIMIC-CXR's files/p../p../s...txt), when not under --data");
  c->add_option("-m,--manifest", o->manifest, "A manifest CSV/JSONL (image, report, split columns) instead of MIMIC");
  c->add_option("--root", o->root, "Manifest: the root its relative image paths resolve against (default: its folder)");
  c->add_option("--size", o->size,
                "Square side in pixels (default: the image_size of the model `afloc train` would build: the config's\n"
                "init or model, else the " + model::preset("tiny").name + " preset's " + std::to_string(model::preset("tiny").image_size) + ")")
      ->check(CLI::Range(16, 8192))
      ->default_str("");  // the default depends on the config
  c->add_option("--splits", o->splits, "Splits kept (default: the config's training and validation splits, train,validate)")
      ->delimiter(',');
  c->add_option("--views", o->views, "MIMIC: ViewPosition values kept, comma-separated, or all (default: the config's, PA,AP)")
      ->delimiter(',');
  c->add_flag("--last-paragraph", o->last_paragraph, "MIMIC: a report with neither section keeps its last paragraph");
  c->add_option("--dicom-voi", o->dicom_voi, "DICOM to 8 bits: auto, minmax or authors (default: the config's data.dicom_voi, auto)")
      ->check(CLI::IsMember(data::dicom_voi_names()));
  c->add_flag("--json", o->json, "Print the summary as JSON");
  c->footer(
      "An interrupted run resumes with the same command: images already written are kept. The manifest is\n"
      "written last, so a folder without one is not ready. Train on it with the same model settings:\n"
      "  afloc prepare -c run.json -o prepared && afloc train -c run.json -m prepared/manifest.csv");
  c->callback([o, &g] {
    apply_global(g);
    train::RunConfig cfg;
    const bool from_config = !o->config.empty();
    if (from_config) cfg = train::load_run_config(o->config);
    train::DataConfig& d = cfg.data;
    if (!o->data.empty()) {
      d.format = "mimic";
      d.root = o->data;
    }
    if (!o->reports.empty()) d.reports = o->reports;
    if (!o->manifest.empty()) {
      if (!o->data.empty()) throw Error("prepare: give --data (MIMIC) or --manifest, not both");
      d.format = "manifest";
      d.manifest = o->manifest;
      d.root = o->root;
    } else if (!o->root.empty()) {
      throw Error("prepare: --root is the root of a --manifest's images; for MIMIC-CXR-JPG use --data");
    }
    if (!o->views.empty()) d.views = view_positions(o->views);
    if (o->last_paragraph) d.last_paragraph = true;
    if (!o->dicom_voi.empty()) d.dicom_voi = o->dicom_voi;
    std::vector<std::string> splits = o->splits;
    if (splits.empty()) {
      splits = d.train_splits;
      for (const auto& s : d.val_splits)
        if (std::find(splits.begin(), splits.end(), s) == splits.end()) splits.push_back(s);
    }
    // The model's input size, as `afloc train` builds the model (init weights bring their own config):
    // a prepared image then passes the loader's resize unchanged.
    int64_t size = o->size;
    if (size == 0 && !cfg.init.empty())
      size = with_context("prepare: the size of the model in init " + cfg.init,
                          [&] { return io::load_model(cfg.init, torch::kCPU).config.image_size; });
    if (size == 0) size = cfg.model.image_size;
    if (d.format == "mimic" && d.root.empty()) throw Error("prepare: no data: give --data DIR, --manifest FILE or a config with data.root");
    if (d.format == "manifest" && d.manifest.empty()) throw Error("prepare: the config's data.format is manifest but it names no data.manifest");

    const bool progress = log::level() <= log::Level::kInfo;
    data::PrepareOptions po;
    po.out = o->out;
    po.size = size;
    po.threads = hardware_threads();
    if (g.threads > 0) po.threads = g.threads;
    po.progress = progress;
    po.read.dicom_voi = data::parse_dicom_voi(d.dicom_voi);
    data::PairList pl;
    std::string labels_from;  // where the manifest's labels column comes from
    if (d.format == "mimic") {
      data::MimicOptions mo;
      mo.root = d.root;
      mo.reports_root = d.reports;
      mo.splits = splits;
      mo.views = d.views;
      mo.last_paragraph = d.last_paragraph;
      // The report labels go into the manifest's labels column whenever there are some
      // (loop.drop_same_labels reads them there), the chexpert CSV by default.
      mo.labels_csv = train::labels_csv(cfg);
      if (mo.labels_csv.empty()) mo.labels_csv = data::mimic_csv_path(d.root, "mimic-cxr-2.0.0-chexpert");
      mo.progress = progress;
      pl = data::read_mimic(mo);
      labels_from = mo.labels_csv;
      po.source_root = d.root;
      po.source = {{"format", "mimic"}, {"root", absolute(d.root)}, {"reports", absolute(d.reports)},
                   {"splits", join(splits, ",")}, {"views", d.views.empty() ? "all" : join(d.views, ",")},
                   {"last_paragraph", d.last_paragraph ? "true" : "false"}, {"dicom_voi", d.dicom_voi}};
    } else {
      data::ManifestOptions mo;
      mo.path = d.manifest;
      mo.root = d.root;
      mo.splits = splits;
      mo.progress = progress;
      pl = data::read_manifest(mo);
      labels_from = d.manifest + "'s labels column";
      po.source_root = d.root.empty() ? std::filesystem::path(d.manifest).parent_path().string() : d.root;
      if (po.source_root.empty()) po.source_root = ".";
      po.source = {{"format", "manifest"}, {"manifest", absolute(d.manifest)}, {"root", absolute(d.root)},
                   {"splits", join(splits, ",")}, {"dicom_voi", d.dicom_voi}};
    }
    if (pl.samples.empty())
      throw Error("prepare: no pairs in the splits " + join(splits, ",") + " (" + pl.skipped.summary() + ")");
    po.read_skipped = pl.skipped;
    const data::PrepareResult r = data::prepare_images(pl.samples, po);
    int64_t pairs = 0;
    for (const auto& [k, v] : r.per_split) pairs += v;
    const auto labelled = std::count_if(pl.samples.begin(), pl.samples.end(), [](const data::Sample& s) { return !s.labels.empty(); });
    if (o->json) {
      nlohmann::ordered_json j{{"manifest", r.manifest}, {"size", size},          {"pairs", r.per_split},
                               {"written", r.written},   {"reused", r.reused},    {"bytes", r.bytes},
                               {"skipped", r.skipped.counts}, {"labelled", labelled}, {"seconds", r.seconds}};
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::string by_split;
    for (const auto& [k, v] : r.per_split) by_split += (by_split.empty() ? "" : ", ") + k + " " + std::to_string(v);
    const int64_t images = r.written + r.reused;
    std::printf("prepared %lld pairs (%s) at %lld px in %s\n", static_cast<long long>(pairs), by_split.c_str(),
                static_cast<long long>(size), o->out.c_str());
    std::printf("  images    %lld (%lld written now, %lld kept from an earlier run), %s\n", static_cast<long long>(images),
                static_cast<long long>(r.written), static_cast<long long>(r.reused), storage(r.bytes).c_str());
    std::printf("  time      %.1f s (%.0f images/s)\n", r.seconds, r.seconds > 0 ? static_cast<double>(r.written) / r.seconds : 0.0);
    std::printf("  skipped   %s\n", r.skipped.summary().c_str());
    if (r.skipped.counts.count("unreadable image"))
      std::printf("            every unreadable image: %s/unreadable.csv\n", o->out.c_str());
    if (labelled > 0) {
      std::printf("  labels    %lld of %zu pairs, from %s (for --drop-same-labels)\n", static_cast<long long>(labelled),
                  pl.samples.size(), labels_from.c_str());
    }
    std::printf("  manifest  %s\n", r.manifest.c_str());
    std::printf("train on it: afloc train %s-m %s\n", from_config ? ("-c " + o->config + " ").c_str() : "", r.manifest.c_str());
  });
}

}  // namespace

void register_data_commands(CLI::App& app, GlobalOptions& g) {
  auto o = std::make_shared<SynthCliOptions>();
  auto* synth = app.add_subcommand(
      "synth",
      "Render a phantom chest X-ray world (shared/PHANTOM.md): MIMIC-CXR-JPG layout for pretraining plus\n"
      "test ground truth as MS-CXR, RSNA, CheXlocalize and SIIM-ACR files");
  synth->add_option("-o,--out", o->synth.out, "Output directory")->required(false);
  synth->add_option("-n,--n-train", o->synth.n_train, "Pretraining studies (split 'train')");
  synth->add_option("--n-val", o->synth.n_val, "Validation studies (-1 = 5% of --n-train)");
  synth->add_option("-m,--n-test", o->synth.n_test, "Test studies with ground truth");
  synth->add_flag("-u,--unseen", o->unseen, "Also write a COVID-Rural-style set of a finding never named in training");
  synth->add_option("--n-unseen", o->synth.n_unseen, "Images in the unseen set (0 with --unseen = --n-test)");
  synth->add_option("--size", o->synth.size, "Image side in pixels")->check(CLI::Range(64, 4096));
  synth->add_option("-s,--seed", o->synth.seed, "World seed");
  synth->add_option("-q,--jpeg-quality", o->synth.jpeg_quality, "JPEG quality")->check(CLI::Range(1, 100));
  synth->add_option("--contact-sheet", o->contact_sheet,
                    "Write a PNG grid of the world's first studies with mask outlines and impressions to this file,\n"
                    "and a row of the unseen set's with --unseen (no world is written unless --out is given too)");
  synth->add_option("--sheet-n", o->sheet_n, "Studies on the contact sheet")->check(CLI::Range(1, 400));
  synth->add_flag("--json", o->json, "Print the summary as JSON");
  synth->callback([o, &g] {
    apply_global(g);
    if (o->synth.out.empty() && o->contact_sheet.empty()) throw Error("synth: give --out DIR and/or --contact-sheet FILE");
    o->synth.threads = g.threads;
    if (o->unseen && o->synth.n_unseen == 0) o->synth.n_unseen = o->synth.n_test;
    if (!o->contact_sheet.empty()) {
      data::phantom::write_contact_sheet(o->contact_sheet, o->synth, o->sheet_n);
      log::info("contact sheet: " + o->contact_sheet);
    }
    if (o->synth.out.empty()) return;
    o->synth.progress = log::level() <= log::Level::kInfo;
    const auto s = data::phantom::write_phantom_world(o->synth);
    nlohmann::ordered_json j{{"out", o->synth.out}, {"train", s.train}, {"validate", s.val}, {"test", s.test},
                             {"unseen", s.unseen}, {"test_instances", s.test_instances}, {"seconds", s.seconds}};
    if (o->json) {
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    const int64_t n = s.train + s.val + s.test + s.unseen;
    std::printf("phantom world in %s: %lld train, %lld validate, %lld test, %lld unseen (%.1f s, %.0f images/min)\n",
                o->synth.out.c_str(), static_cast<long long>(s.train), static_cast<long long>(s.val),
                static_cast<long long>(s.test), static_cast<long long>(s.unseen), s.seconds,
                s.seconds > 0 ? 60.0 * static_cast<double>(n) / s.seconds : 0.0);
    std::printf("  %-22s %s\n", "test category", "instances");
    for (const auto& [k, v] : s.test_instances) std::printf("  %-22s %lld\n", k.c_str(), static_cast<long long>(v));
  });
  register_prepare(app, g);
}

}  // namespace afloc::cli
