// `afloc eval-phantom`: zero-shot localization of a trained checkpoint on a phantom world's hidden
// masks or boxes, against the centre-prior baseline.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "afloc/common/error.h"
#include "afloc/common/log.h"
#include "afloc/data/datasets.h"
#include "afloc/eval/localization_eval.h"
#include "afloc/io/model_io.h"
#include "commands.h"
#include "inputs.h"

namespace afloc::cli {
namespace {

struct EvalCli {
  std::vector<std::string> models;
  std::string run, world, out = "eval";
  std::vector<std::string> splits = {"test"};
  eval::LocEvalOptions loc;
  bool json = false, no_classify = false, dense_map = false;
  int64_t centre_n = 500;  ///< --centre-n: training films the centred reading averages
  std::string levels, truth = "masks";
  PromptCacheFlags cache;
};

}  // namespace

void register_eval_commands(CLI::App& app, GlobalOptions& g) {
  auto o = std::make_shared<EvalCli>();
  auto* c = app.add_subcommand("eval-phantom",
                               "Zero-shot localization on a phantom world's hidden masks (or boxes): pointing-game hit rate,\n"
                               "5-threshold mean IoU, Dice and CNR per finding, next to a centre-prior baseline;\n"
                               "zero-shot classification AUROC per finding");
  c->add_option("-M,--model,-k,--checkpoint", o->models,
                 "Model: a model directory (afloc import/export), a checkpoint directory, or a run directory; repeat it\n"
                 "for an ensemble (heatmaps and probabilities averaged over the models, e.g. runs of several seeds)");
  c->add_option("-r,--run", o->run, "Run directory: use its latest checkpoint (same as --model RUN)");
  c->add_option("-w,--world", o->world, "Phantom world directory (afloc synth --out)")->required();
  c->add_option("--split", o->splits, "Ground-truth splits: test and/or unseen");
  c->add_option("-o,--out", o->out, "Output directory (metrics.json, cases.csv, table.txt, overlays/)");
  c->add_option("--truth", o->truth,
                "What heatmaps are scored against: masks (the findings' pixel masks, as SIIM and CheXlocalize are scored)\n"
                "or boxes (their bounding boxes, box_mapping + box2mask, as MS-CXR and RSNA are scored)")
      ->check(CLI::IsMember(eval::truth_names()));
  c->add_option("--prompt", o->loc.prompt_template, "Prompt template ({finding} = lower-case category; without it, one prompt for all = a control)");
  c->add_option("--eval-size", o->loc.eval_size, "Square size at which heatmaps meet masks")
      ->check(CLI::Range(16, 8192));
  c->add_option("--sigma", o->loc.heatmap.sigma, "Heatmap smoothing in feature cells (<0: 1.5 x side/19, 0: none)");
  c->add_flag("--dense-map", o->dense_map, DENSE_MAP_HELP);
  c->add_option("--levels", o->levels, LEVELS_HELP)->check(CLI::IsMember(model::heatmap_level_names()));
  c->add_option("--contrast", o->loc.contrast,
                "Contrast reading: each finding's map minus this weight (0-1; 0 = off) times the mean map of the\n"
                "evaluated findings' prompts, taking out what the prompts share (the template's words). 0.5 pointed\n"
                "best on the phantom world. Not in the authors' protocol")
      ->check(CLI::Range(0.0, 1.0));
  add_centre_option(c, o->loc.centre, "the world's first --centre-n training films, listed in OUT/centre_films.txt");
  c->add_option("--centre-n", o->centre_n, "Reference films of --centre: the world's first N training films")
      ->check(at_least(1));
  c->add_option("--margin", o->loc.heatmap.margin, "NaN border in pixels (<0: 14 x size/224)");
  c->add_option("--overlays", o->loc.n_overlays, "PNG overlays written (first cases)")->check(at_least(0));
  c->add_flag("--no-classify", o->no_classify, "Skip the zero-shot classification (AUROC) part");
  c->add_option("--bootstrap", o->loc.bootstrap, "Bootstrap resamples of the cases for 95% intervals (0: none)")
      ->check(at_least(0));
  c->add_option("--bootstrap-seed", o->loc.bootstrap_seed, "Seed of the bootstrap resamples");
  c->add_flag("--json", o->json, "Print metrics as JSON");
  o->cache.add_to(c);
  c->callback([o, &g] {
    apply_global(g);
    std::vector<std::string> cks = o->models;
    if (!o->run.empty()) cks.push_back(o->run);
    if (cks.empty()) throw Error("eval-phantom: give --model DIR (a model directory, checkpoint or run)");
    std::vector<model::AflocModel> nets;
    for (const auto& ck : cks) {
      auto tm = io::load_model(ck, torch::Device(g.device));
      if (o->dense_map) tm.model->set_dense_map(true);
      if (!o->levels.empty()) tm.model->set_heatmap_levels(o->levels);
      tm.model->optimize_for_inference();
      nets.push_back(tm.model);
    }
    const auto images = eval::read_phantom_ground_truth(o->world, o->splits);
    if (images.empty()) throw Error(o->world + ": no ground-truth images in the requested splits");
    o->loc.overlays_dir = o->loc.n_overlays > 0 ? (std::filesystem::path(o->out) / "overlays").string() : "";
    o->loc.progress = log::level() <= log::Level::kInfo;
    o->loc.classify = !o->no_classify;
    o->loc.truth = eval::truth_from_name(o->truth);
    o->loc.prompt_cache_dir = o->cache.resolved();
    if (o->loc.centre > 0) {
      // The world's training films, as its MIMIC-CXR-JPG tree lists them (frontal views).
      data::MimicOptions mo;
      mo.root = (std::filesystem::path(o->world) / "mimic-cxr-jpg").string();
      mo.read_reports = false;
      const auto train = data::read_mimic(mo);
      if (train.samples.empty()) throw Error("eval-phantom --centre: " + mo.root + " lists no training film");
      o->loc.centre_films.clear();
      std::string list;
      for (const auto& smp : train.samples) {
        if (static_cast<int64_t>(o->loc.centre_films.size()) == o->centre_n) break;
        o->loc.centre_films.push_back(smp.image);
        list += std::filesystem::absolute(smp.image).string() + "\n";
      }
      // The films, for `localize --centre-films` to read the same maps.
      std::filesystem::create_directories(o->out);
      write_file_atomic((std::filesystem::path(o->out) / "centre_films.txt").string(), list);
    }
    const auto r = eval::evaluate_localization(nets, images, o->loc);
    const std::string table = eval::write_localization_report(r, o->out);
    if (o->json) {
      std::printf("%s", read_file((std::filesystem::path(o->out) / "metrics.json").string()).c_str());
      return;
    }
    std::string names;
    for (const auto& ck : cks) names += (names.empty() ? "" : " + ") + ck;
    std::printf("%s %s on %s (%zu images)\n%s", cks.size() > 1 ? "ensemble" : "checkpoint", names.c_str(), o->world.c_str(),
                images.size(), table.c_str());
  });
}

}  // namespace afloc::cli
