// `afloc localize`: heatmaps, masks and boxes for any prompt on users' images (PNG, JPEG, DICOM).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "afloc/common/error.h"
#include "afloc/common/log.h"
#include "afloc/common/progress.h"
#include "afloc/data/csv.h"
#include "afloc/data/image.h"
#include "afloc/infer/localizer.h"
#include "afloc/text/clean.h"
#include "afloc/io/model_io.h"
#include "afloc/io/npy.h"
#include "commands.h"

namespace fs = std::filesystem;

namespace afloc::cli {
namespace {

struct LocalizeCli {
  std::string model, prompt_file, out = "localize";
  std::vector<std::string> prompts, inputs;
  infer::LocalizeOptions o;
  bool no_npy = false, no_masks = false;
};

bool image_ext(const fs::path& p) {
  std::string e = p.extension().string();
  for (auto& c : e) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return e == ".png" || e == ".jpg" || e == ".jpeg" || e == ".dcm" || e == ".dicom";
}

// Files, directories (recursive, sorted) and lists (.csv with an image/path column, .txt one per line).
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> out;
  for (const auto& in : inputs) {
    const fs::path p(in);
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> found;
      for (const auto& e : fs::recursive_directory_iterator(p, ec))
        if (e.is_regular_file() && image_ext(e.path())) found.push_back(e.path().string());
      std::sort(found.begin(), found.end());
      if (found.empty()) log::warn(in + ": no PNG/JPEG/DICOM files inside");
      out.insert(out.end(), found.begin(), found.end());
    } else if (p.extension() == ".csv") {
      const data::CsvTable t = data::read_csv(in);
      size_t c = t.find_column("image");
      if (c == std::string::npos) c = t.column("path");
      for (size_t r = 0; r < t.rows.size(); ++r) {
        const std::string v = t.at(r, c);
        out.push_back(fs::path(v).is_absolute() ? v : (p.parent_path() / v).string());
      }
    } else if (p.extension() == ".txt") {
      std::istringstream lines(read_file(in));
      std::string line;
      while (std::getline(lines, line))
        if (!line.empty()) out.push_back(line);
    } else {
      out.push_back(in);
    }
  }
  return out;
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

nlohmann::ordered_json options_json(const infer::LocalizeOptions& o) {
  return {{"size", o.size},
          {"sigma", o.heatmap.sigma},
          {"truncate", o.heatmap.truncate},
          {"margin", o.heatmap.margin},
          {"interpolation", o.heatmap.interpolation},
          {"normalization", o.heatmap.normalization},
          {"thresholds", o.thresholds},
          {"batch", o.batch}};
}

}  // namespace

void register_localize_commands(CLI::App& app, GlobalOptions& g) {
  auto o = std::make_shared<LocalizeCli>();
  auto* c = app.add_subcommand("localize",
                               "Heatmaps, masks and boxes for text prompts on images (PNG, JPEG, DICOM; files, folders,\n"
                               ".csv with an image column, .txt lists)");
  c->add_option("-M,--model", o->model, "Model directory, training checkpoint or run directory")->required();
  c->add_option("-p,--prompt", o->prompts, "Prompt (repeatable), e.g. \"Findings suggesting pneumothorax.\"")
      ->allow_extra_args(false);
  c->add_option("--prompt-file", o->prompt_file, "Prompts: one per line, or a .json array of strings");
  c->add_option("inputs", o->inputs, "Images, folders or lists")->required();
  c->add_option("-o,--out", o->out, "Output directory");
  c->add_option("--size", o->o.size, "Output side in pixels (SPEC: 224)");
  c->add_option("--sigma", o->o.heatmap.sigma, "Gaussian blur in feature cells (<0: 1.5 x side/19)");
  c->add_option("--truncate", o->o.heatmap.truncate, "Gaussian kernel radius in sigmas");
  c->add_option("--margin", o->o.heatmap.margin, "NaN border in pixels (<0: 14 x size/224; 0: none)");
  c->add_option("--interpolation", o->o.heatmap.interpolation, "bilinear, bicubic or nearest");
  c->add_option("--normalization", o->o.heatmap.normalization, "minmax ([-1,1]), minmax01 or none");
  c->add_option("--thresholds", o->o.thresholds, "Mask thresholds, comma-separated")->delimiter(',')->allow_extra_args(false);
  c->add_option("-b,--batch", o->o.batch, "Images per forward pass");
  c->add_flag("--no-npy", o->no_npy, "Do not write heatmaps as .npy");
  c->add_flag("--no-masks", o->no_masks, "Do not write mask PNGs");
  c->callback([o, &g] {
    apply_global(g);
    std::vector<std::string> prompts = o->prompts;
    if (!o->prompt_file.empty()) {
      const auto more = read_prompt_file(o->prompt_file);
      prompts.insert(prompts.end(), more.begin(), more.end());
    }
    if (prompts.empty()) throw Error("localize: give --prompt or --prompt-file");
    for (const auto& p : prompts) {
      if (text::clean_prompt(p).empty()) {
        log::warn("prompt '" + p + "' is empty after AFLoc's cleaning (one word or no letters): its heatmap carries no meaning");
      }
    }
    const auto images = expand_inputs(o->inputs);
    if (images.empty()) throw Error("localize: no images found in the inputs");
    io::LoadedModel m = io::load_model(o->model, torch::Device(g.device));
    infer::Localizer loc(m.model, o->o);
    fs::create_directories(o->out);
    nlohmann::ordered_json echo{{"model", m.source}, {"prompts", prompts}, {"options", options_json(o->o)}};
    write_file_atomic((fs::path(o->out) / "options.json").string(), echo.dump(2) + "\n");
    std::ofstream jsonl(fs::path(o->out) / "results.jsonl");
    std::vector<std::pair<std::string, std::string>> failed;
    std::set<std::string> used;  // output folders taken (two inputs may share a file stem)
    std::string dir;
    ProgressBar bar("localize", static_cast<int64_t>(images.size()), "img");
    const size_t chunk = static_cast<size_t>(std::max<int64_t>(1, o->o.batch));
    int64_t records = 0;
    for (size_t start = 0; start < images.size(); start += chunk) {
      std::vector<data::Gray8> grey;
      std::vector<std::string> names;
      for (size_t i = start; i < std::min(images.size(), start + chunk); ++i) {
        try {
          grey.push_back(data::read_gray8(images[i]));
          names.push_back(images[i]);
        } catch (const std::exception& e) {
          failed.emplace_back(images[i], e.what());
          log::warn(e.what());
        }
        bar.update(1);
      }
      if (grey.empty()) continue;
      const auto results = loc.run(grey, names, prompts);
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
        infer::write_overlay(base.string() + "_overlay.png", data::resize_pad(src, o->o.size), r.heatmap, r.prompt);
        files["heatmap_png"] = base.string() + "_heatmap.png";
        files["overlay_png"] = base.string() + "_overlay.png";
        if (!o->no_masks) {
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
                                   {"peak", {{"x", r.peak_x}, {"y", r.peak_y}, {"value", r.peak}}},
                                   {"regions", regions},
                                   {"files", files},
                                   {"options", options_json(o->o)}};
        jsonl << rec.dump() << "\n";
        ++records;
      }
    }
    bar.finish();
    for (const auto& [img, why] : failed) {
      nlohmann::ordered_json rec{{"image", img}, {"error", why}};
      jsonl << rec.dump() << "\n";
    }
    jsonl.close();
    std::printf("localized %zu images x %zu prompts -> %s (results.jsonl: %lld records)\n", images.size() - failed.size(),
                prompts.size(), o->out.c_str(), static_cast<long long>(records));
    if (!failed.empty()) {
      std::printf("%zu images failed:\n", failed.size());
      for (const auto& [img, why] : failed) std::printf("  %s\n", why.c_str());
      throw Error(std::to_string(failed.size()) + " of " + std::to_string(images.size()) + " images could not be read (listed above; the rest are done)");
    }
  });
}

}  // namespace afloc::cli
