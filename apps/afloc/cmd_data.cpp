// Data subcommands: `afloc synth` (the phantom world).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "afloc/common/error.h"
#include "afloc/common/log.h"
#include "afloc/data/phantom_writer.h"
#include "commands.h"

namespace afloc::cli {
namespace {

struct SynthCliOptions {
  data::phantom::SynthOptions synth;
  bool unseen = false;
  std::string contact_sheet;
  int64_t sheet_n = 16;
  bool json = false;
};

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
}

}  // namespace afloc::cli
