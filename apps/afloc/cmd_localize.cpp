// `afloc localize`: heatmaps, masks and boxes for any prompt on users' images (PNG, JPEG, DICOM).
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "afloc/common/error.h"
#include "afloc/common/log.h"
#include "afloc/common/progress.h"
#include "afloc/common/strings.h"
#include "afloc/data/csv.h"
#include "afloc/data/image.h"
#include "afloc/eval/localization_eval.h"
#include "afloc/eval/metrics.h"
#include "afloc/infer/localizer.h"
#include "afloc/infer/prompt_bank.h"
#include "afloc/text/clean.h"
#include "afloc/io/model_io.h"
#include "afloc/io/npy.h"
#include "commands.h"
#include "inputs.h"

namespace fs = std::filesystem;

namespace afloc::cli {
namespace {

struct LocalizeCli {
  std::vector<std::string> models;
  std::string prompt_file, out = "localize", prompt_template = "Findings suggesting {finding}.", boxes;
  std::vector<std::string> prompts, findings, inputs;
  MimicInputFlags mimic;
  DicomVoiFlag dicom;
  infer::LocalizeOptions o;
  bool no_npy = false, no_masks = false, dense_map = false, resume = false;
  std::string levels;  ///< "" = each model's own heatmap_levels
  PromptCacheFlags cache;
  std::vector<std::string> centre_inputs;  ///< --centre-films: the centred reading's reference films
  int64_t centre_n = 500;
};

// Ground-truth boxes for overlays: image (or path), x, y, w, h in the image's own pixels,
// optionally a `finding` (or MS-CXR's `category_name`) or `prompt` column naming what the box is
// for (blank = every prompt). MS-CXR's CSV is read as is.
struct GtBox {
  std::string image, label;
  std::vector<double> xywh;
};

std::vector<GtBox> read_boxes(const std::string& path) {
  const data::CsvTable t = data::read_csv(path);
  size_t img = t.find_column("image");
  if (img == std::string::npos) img = t.column("path");
  const size_t x = t.column("x"), y = t.column("y"), w = t.column("w"), h = t.column("h");
  size_t label = t.find_column("finding");
  if (label == std::string::npos) label = t.find_column("category_name");  // MS-CXR
  if (label == std::string::npos) label = t.find_column("prompt");
  std::vector<GtBox> out;
  for (size_t r = 0; r < t.rows.size(); ++r) {
    GtBox b;
    b.image = t.at(r, img);
    b.label = label == std::string::npos ? "" : t.at(r, label);
    for (size_t c : {x, y, w, h}) {
      const std::string& v = t.at(r, c);
      char* end = nullptr;
      const double d = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !std::isfinite(d))
        throw Error(path + " row " + std::to_string(r + 2) + " column " + t.header[c] + ": '" + v + "' is not a number");
      b.xywh.push_back(d);
    }
    out.push_back(b);
  }
  return out;
}

// A box's image names an input when its path (relative to the CSV, or to any folder such as
// MS-CXR's paths relative to the MIMIC-CXR-JPG root) is a trailing part of the input's path.
bool same_image(const std::string& box_image, const std::string& boxes_csv, const std::string& input) {
  const fs::path b = fs::path(box_image).lexically_normal(), in = fs::absolute(input).lexically_normal();
  if (b.filename() != in.filename()) return false;
  if (b.is_absolute()) return b == in;
  const fs::path csv_dir = fs::path(boxes_csv).parent_path();  // empty for a bare file name: the working directory
  if ((fs::absolute(csv_dir.empty() ? fs::path(".") : csv_dir) / b).lexically_normal() == in) return true;
  std::vector<fs::path> bs(b.begin(), b.end()), is(in.begin(), in.end());
  return bs.size() <= is.size() && std::equal(bs.rbegin(), bs.rend(), is.rbegin());
}

std::vector<std::string> read_prompt_file(const std::string& path) {
  const std::string text = read_file(path);
  std::vector<std::string> out;
  if (fs::path(path).extension() == ".json") {
    const auto j = with_context(path, [&] { return nlohmann::json::parse(text); });
    if (!j.is_array()) throw Error(path + ": expected a JSON array of prompt strings");
    for (const auto& v : j) {
      if (!v.is_string()) throw Error(path + ": prompt " + v.dump() + " is not a string");
      out.push_back(v.get<std::string>());
    }
  } else {
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line))
      if (line.find_first_not_of(" \t\r") != std::string::npos) out.push_back(line);
  }
  return out;
}

nlohmann::ordered_json options_json(const infer::LocalizeOptions& o, bool dense_map,
                                    const std::vector<model::AflocModel>& nets) {
  // The maps each model's heatmaps read (its heatmap_levels, or --levels for all).
  std::vector<std::string> levels;
  for (const auto& n : nets) levels.push_back(n->config().heatmap_levels);
  return {{"models", nets.size()},
          {"size", o.size},
          {"dense_map", dense_map},
          {"levels", levels.size() == 1 ? nlohmann::ordered_json(levels[0]) : nlohmann::ordered_json(levels)},
          {"sigma", o.heatmap.sigma},
          {"truncate", o.heatmap.truncate},
          {"margin", o.heatmap.margin},
          {"interpolation", o.heatmap.interpolation},
          {"normalization", o.heatmap.normalization},
          {"thresholds", o.thresholds},
          {"batch", o.batch},
          {"present_threshold", o.present_threshold},
          {"all", o.all},
          {"contrast", o.contrast},
          {"contrast_prompts", o.contrast_prompts},
          {"centre", o.centre}};
}

}  // namespace

void register_localize_commands(CLI::App& app, GlobalOptions& g) {
  auto o = std::make_shared<LocalizeCli>();
  auto* c = app.add_subcommand("localize",
                               "Heatmaps, masks and boxes for text prompts on images (PNG, JPEG, DICOM; files, folders,\n"
                               ".csv with an image column, .txt lists)");
  c->add_option("-M,--model", o->models,
                 "Model directory, training checkpoint or run directory; repeat it for an ensemble (heatmaps and\n"
                 "presence probabilities averaged over the models, e.g. runs of several seeds)")
      ->required()
      ->allow_extra_args(false);
  c->add_option("-p,--prompt", o->prompts, "Prompt (repeatable), e.g. \"Findings suggesting pneumothorax.\"")
      ->allow_extra_args(false);
  c->add_option("--prompt-file", o->prompt_file, "Prompts: one per line, or a .json array of strings");
  c->add_option("-f,--finding", o->findings,
                "Finding (repeatable): prompt from --template; presence from the authors' chest X-ray prompt table")
      ->allow_extra_args(false);
  c->add_option("--template", o->prompt_template, "Prompt template for --finding");
  c->add_flag("--all", o->o.all, "Masks and regions for every prompt, also those classified absent");
  c->add_option("--present-threshold", o->o.present_threshold, "A finding is present when its probability exceeds this")
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--boxes", o->boxes, "Ground-truth boxes CSV (image,x,y,w,h[,finding|prompt]; MS-CXR's CSV as is) drawn on the overlays");
  c->add_option("inputs", o->inputs, "Images, folders or lists");
  o->mimic.add_to(c);
  c->add_option("-o,--out", o->out, "Output directory");
  c->add_option("--size", o->o.size, "Output side in pixels (SPEC: 224)");
  c->add_option("--sigma", o->o.heatmap.sigma, "Gaussian blur in feature cells (<0: 1.5 x side/19, 0: none)");
  c->add_flag("--dense-map", o->dense_map, DENSE_MAP_HELP);
  c->add_option("--levels", o->levels, LEVELS_HELP)->check(CLI::IsMember(model::heatmap_level_names()));
  c->add_option("--contrast", o->o.contrast,
                "Contrast reading: each prompt's map minus this weight (0-1; 0 = off) times the mean map of the\n"
                "references (this run's prompts and any --contrast-prompt), taking out what the prompts share (a\n"
                "template's words). 0.5 pointed best on the phantom world. Needs 2+ references. Not in the\n"
                "authors' protocol")
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--contrast-prompt", o->o.contrast_prompts,
                "A reference prompt for --contrast only (repeatable; not mapped itself)")
      ->allow_extra_args(false);
  add_centre_option(c, o->o.centre, "--centre-films: films of the inputs' population, e.g. the model's training films");
  c->add_option("--centre-films", o->centre_inputs,
                "Reference films of --centre: files, folders or lists, as the inputs; the first --centre-n are read")
      ->allow_extra_args(false);
  c->add_option("--centre-n", o->centre_n, "Reference films of --centre read at most")->check(at_least(1));
  c->add_option("--truncate", o->o.heatmap.truncate, "Gaussian kernel radius in sigmas");
  c->add_option("--margin", o->o.heatmap.margin, "NaN border in pixels (<0: 14 x size/224; 0: none)");
  c->add_option("--interpolation", o->o.heatmap.interpolation, "bilinear, bicubic or nearest");
  c->add_option("--normalization", o->o.heatmap.normalization, "minmax ([-1,1]), minmax01 or none");
  c->add_option("--thresholds", o->o.thresholds, "Mask thresholds, comma-separated")->delimiter(',')->allow_extra_args(false);
  c->add_option("-b,--batch", o->o.batch, "Images per forward pass");
  o->dicom.add_to(c);
  c->add_flag("--no-npy", o->no_npy, "Do not write heatmaps as .npy");
  c->add_flag("--no-masks", o->no_masks, "Do not write mask PNGs");
  c->add_flag("--resume", o->resume,
              "Continue an interrupted run into the same --out: images whose results are all in its results.jsonl\n"
              "are kept, the rest (and failed ones) are done; the models, prompts and options must be the same");
  o->cache.add_to(c);
  c->callback([o, &g] {
    apply_global(g);
    std::vector<std::string> prompts = o->prompts;
    if (!o->prompt_file.empty()) {
      const auto more = read_prompt_file(o->prompt_file);
      prompts.insert(prompts.end(), more.begin(), more.end());
    }
    // Presence test per prompt: a free prompt against its negative form; a --finding with the
    // authors' chest X-ray prompt set for that category.
    infer::PromptBank presence_bank;
    presence_bank.name = "presence";
    for (const auto& p : prompts) presence_bank.classes.push_back(infer::presence_prompts(p));
    for (const auto& f : o->findings) {
      prompts.push_back(eval::prompt_for(o->prompt_template, f));
      infer::ClassPrompts c = infer::cxr_class_prompts(f);
      c.name = prompts.back();
      presence_bank.classes.push_back(c);
    }
    if (prompts.empty()) throw Error("localize: give --prompt, --finding or --prompt-file");
    for (const auto& p : prompts)
      if (p.find_first_not_of(" \t\r\n") == std::string::npos) throw Error("localize: a prompt is empty");
    for (const auto& f : o->findings)
      if (f.find_first_not_of(" \t\r\n") == std::string::npos) throw Error("localize: a --finding is empty");
    for (size_t i = 0; i < prompts.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        if (prompts[i] == prompts[j]) throw Error("localize: prompt '" + prompts[i] + "' is given twice");
    const std::vector<GtBox> boxes = o->boxes.empty() ? std::vector<GtBox>{} : read_boxes(o->boxes);
    for (const auto& p : prompts) {
      if (text::clean_prompt(p).empty()) {
        log::warn("prompt '" + p + "' is empty after AFLoc's cleaning (one word or no letters): its heatmap carries no meaning");
      }
    }
    if (!o->o.contrast_prompts.empty() && o->o.contrast == 0) throw Error("localize: --contrast-prompt needs --contrast W");
    if (o->o.contrast > 0 && prompts.size() + o->o.contrast_prompts.size() < 2) {
      throw Error("localize: --contrast needs at least 2 prompts (give more, or --contrast-prompt)");
    }
    if (!o->centre_inputs.empty() && o->o.centre == 0) throw Error("localize: --centre-films needs --centre W");
    std::vector<std::string> centre_films;
    if (o->o.centre > 0) {
      if (o->centre_inputs.empty()) {
        throw Error("localize: --centre needs --centre-films (reference films from the inputs' population, e.g. the "
                    "model's training films: files, folders or lists)");
      }
      centre_films = expand_inputs(o->centre_inputs);
      if (centre_films.empty()) throw Error("localize: no images found in --centre-films " + join(o->centre_inputs, " "));
      if (static_cast<int64_t>(centre_films.size()) > o->centre_n) centre_films.resize(static_cast<size_t>(o->centre_n));
    }
    if (o->inputs.empty() && o->mimic.root.empty()) throw Error("localize: no inputs (images, folders, lists or --mimic ROOT)");
    auto images = expand_inputs(o->inputs);
    const std::vector<std::string> mimic = o->mimic.images();
    images.insert(images.end(), mimic.begin(), mimic.end());
    if (images.empty()) throw Error("localize: no images found in the inputs");
    // Each model with its own prompt encoder (text encoder and vocabulary) and presence head.
    std::vector<model::AflocModel> nets;
    std::vector<std::string> sources;
    for (const auto& path : o->models) {
      io::LoadedModel m = io::load_model(path, torch::Device(g.device));
      if (o->dense_map) m.model->set_dense_map(true);
      if (!o->levels.empty()) m.model->set_heatmap_levels(o->levels);
      m.model->optimize_for_inference();
      nets.push_back(m.model);
      sources.push_back(m.source);
    }
    // The encoders keep a reference to their model: made once `nets` no longer grows.
    std::vector<std::unique_ptr<infer::PromptEncoder>> encoders;
    std::vector<infer::PromptEncoder*> encoder_ptrs;
    std::vector<infer::ClassHead> presence;
    for (auto& net : nets) {
      encoders.push_back(std::make_unique<infer::PromptEncoder>(net, o->cache.resolved()));
      encoder_ptrs.push_back(encoders.back().get());
      presence.push_back(infer::build_class_head(*encoders.back(), presence_bank));
    }
    infer::Localizer loc(nets, o->o, encoder_ptrs);
    if (o->o.centre > 0) loc.set_centre(centre_films, o->dicom.read_options(), log::level() <= log::Level::kInfo);
    std::string title_extra = nets.size() > 1 ? "\nmean of " + std::to_string(nets.size()) + " models" : "";
    if (o->o.centre > 0) {
      char line[96];
      std::snprintf(line, sizeof line, "\ncentred: -%g x mean, %zu films", o->o.centre, centre_films.size());
      title_extra += line;
    }
    if (o->o.contrast > 0) {
      char line[96];
      std::snprintf(line, sizeof line, "\ncontrast: -%g x mean, %zu prompts", o->o.contrast,
                    prompts.size() + o->o.contrast_prompts.size());
      title_extra += line;
    }
    fs::create_directories(o->out);
    nlohmann::ordered_json presence_json = nlohmann::ordered_json::object();
    for (const auto& c : presence_bank.classes) presence_json[c.name] = {{"pos", c.pos}, {"neg", c.neg}};
    nlohmann::ordered_json echo{{"model", sources.size() == 1 ? nlohmann::ordered_json(sources[0]) : nlohmann::ordered_json(sources)},
                                {"prompts", prompts},
                                {"presence_prompts", presence_json},
                                {"options", options_json(o->o, o->dense_map, nets)}};
    if (o->o.centre > 0) echo["centre_films"] = centre_films;
    o->dicom.echo_into(echo);
    const fs::path results_path = fs::path(o->out) / "results.jsonl", options_path = fs::path(o->out) / "options.json";
    std::set<std::string> used;  // output folders taken (two inputs may share a file stem)
    int64_t records = 0;
    std::vector<std::string> todo = images;
    if (o->resume) {
      // An image is done when each prompt has one record and the files its records name are there
      // (one deleted since, by hand or by a clean-up, has the image done again).
      const std::set<std::string> wanted(prompts.begin(), prompts.end());
      std::function<bool(const nlohmann::ordered_json&)> files_there = [&](const nlohmann::ordered_json& f) {
        if (f.is_string()) return fs::exists(f.get<std::string>());
        for (const auto& v : f) {
          if (!files_there(v)) return false;
        }
        return true;
      };
      const EarlierRun r = resume_earlier_run(results_path.string(), options_path.string(), echo, images,
                                              [&](const std::vector<nlohmann::ordered_json>& recs) {
                                                std::set<std::string> have;
                                                for (const auto& rec : recs) {
                                                  if (rec.contains("prompt") && rec["prompt"].is_string()) have.insert(rec["prompt"].get<std::string>());
                                                  if (!files_there(rec.value("files", nlohmann::ordered_json::object()))) return false;
                                                }
                                                return have == wanted && recs.size() == wanted.size();
                                              });
      records = r.records;
      todo = r.todo;
      // Their output folders stay taken, so the rest get the names an uninterrupted run gives them.
      for (const auto& [img, recs] : r.done) {
        for (const auto& rec : recs) {
          const auto& files = rec.value("files", nlohmann::ordered_json::object());
          if (files.contains("heatmap_png") && files["heatmap_png"].is_string())
            used.insert(fs::path(files["heatmap_png"].get<std::string>()).parent_path().filename().string());
        }
      }
    }
    write_file_atomic(options_path.string(), echo.dump(2) + "\n");
    std::ofstream jsonl(results_path, o->resume ? std::ios::app : std::ios::trunc);
    if (!jsonl) throw Error(results_path.string() + ": cannot write");
    Failures failed;
    std::string dir;
    ProgressBar bar("localize", static_cast<int64_t>(todo.size()), "img");
    const size_t chunk = static_cast<size_t>(std::max<int64_t>(1, o->o.batch));
    for (size_t start = 0; start < todo.size(); start += chunk) {
      const ImageBatch batch = read_images(todo, start, start + chunk, failed, bar, o->dicom.read_options());
      if (batch.images.empty()) continue;
      const auto& grey = batch.images;
      const auto results = loc.run(grey, batch.names, prompts, presence);
      for (size_t k = 0; k < results.size(); ++k) {
        const auto& r = results[k];
        const data::Gray8& src = grey[k / prompts.size()];
        if (k % prompts.size() == 0) {  // a new image: choose its folder once, for all its prompts
          const std::string stem = fs::path(r.image).stem().string();
          dir = stem;
          for (int n = 2; used.count(dir); ++n) dir = stem + "_" + std::to_string(n);
          used.insert(dir);
        }
        const fs::path base = fs::path(o->out) / dir / infer::slug(r.prompt);
        fs::create_directories(base.parent_path());
        nlohmann::ordered_json files;
        if (!o->no_npy) {
          const torch::Tensor h = r.heatmap.contiguous();
          io::save_npy(base.string() + ".npy", std::vector<float>(h.data_ptr<float>(), h.data_ptr<float>() + h.numel()),
                       {o->o.size, o->o.size});
          files["heatmap_npy"] = base.string() + ".npy";
        }
        infer::write_heatmap_png(base.string() + "_heatmap.png", r.heatmap);
        std::vector<std::array<int64_t, 4>> gt;
        for (const auto& b : boxes) {
          if (!same_image(b.image, o->boxes, r.image)) continue;
          if (!b.label.empty() && b.label != r.prompt && eval::prompt_for(o->prompt_template, b.label) != r.prompt) continue;
          const auto m4 = eval::box_mapping(b.xywh, src.width, src.height, o->o.size);
          gt.push_back({m4[0], m4[1], m4[2], m4[3]});
        }
        char title[320];
        std::snprintf(title, sizeof title, "%s\np(present) = %.2f: %s%s%s", r.prompt.c_str(), r.probability,
                      r.present ? "present" : "absent", title_extra.c_str(), gt.empty() ? "" : "\ngreen: ground truth");
        infer::write_overlay(base.string() + "_overlay.png", data::resize_pad(src, o->o.size), r.heatmap, title, gt);
        files["heatmap_png"] = base.string() + "_heatmap.png";
        files["overlay_png"] = base.string() + "_overlay.png";
        if (!o->no_masks && (r.present || o->o.all)) {
          nlohmann::ordered_json masks = nlohmann::ordered_json::object();
          for (double t : o->o.thresholds) {
            char tag[32];
            std::snprintf(tag, sizeof tag, "_mask_%.2f.png", t);
            infer::write_mask_png(base.string() + tag, r.heatmap, t);
            masks[std::to_string(t).substr(0, 4)] = base.string() + tag;
          }
          files["masks"] = masks;
        }
        nlohmann::ordered_json regions = nlohmann::ordered_json::array();
        for (const auto& reg : r.regions) {
          regions.push_back({{"threshold", reg.threshold},
                             {"box_xywh", {reg.x, reg.y, reg.w, reg.h}},
                             {"pixels", reg.pixels},
                             {"score_max", reg.score_max},
                             {"score_mean", reg.score_mean}});
        }
        nlohmann::ordered_json rec{{"image", r.image},
                                   {"prompt", r.prompt},
                                   {"cleaned_prompt", r.cleaned_prompt},
                                   {"size", o->o.size},
                                   {"original_size", {src.height, src.width}},
                                   {"probability", r.probability},
                                   {"present", r.present},
                                   {"peak", {{"x", r.peak_x}, {"y", r.peak_y}, {"value", r.peak}}},
                                   {"regions", regions},
                                   {"files", files},
                                   {"options", options_json(o->o, o->dense_map, nets)}};
        jsonl << rec.dump() << "\n";
        ++records;
      }
      jsonl.flush();  // an interrupted run keeps every image written so far (--resume)
    }
    bar.finish();
    for (const auto& [img, why] : failed) {
      nlohmann::ordered_json rec{{"image", img}, {"error", why}};
      jsonl << rec.dump() << "\n";
    }
    jsonl.close();
    const size_t earlier = images.size() - todo.size();
    std::printf("localized %zu images x %zu prompts%s%s -> %s (results.jsonl: %lld records)\n", images.size() - failed.size(),
                prompts.size(), nets.size() > 1 ? (", ensemble of " + std::to_string(nets.size()) + " models").c_str() : "",
                earlier > 0 ? (", " + std::to_string(earlier) + " of them by the earlier run").c_str() : "", o->out.c_str(),
                static_cast<long long>(records));
    report_failures(failed, images.size());
  });
}

}  // namespace afloc::cli
