#include "inputs.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "afloc/common/error.h"
#include "afloc/common/log.h"
#include "afloc/common/strings.h"
#include "afloc/data/csv.h"
#include "afloc/data/datasets.h"
#include "afloc/infer/prompt_encoder.h"

namespace fs = std::filesystem;

namespace afloc::cli {

bool is_image_file(const std::string& path) {
  const std::string e = ascii_lower(fs::path(path).extension().string());
  return e == ".png" || e == ".jpg" || e == ".jpeg" || e == ".dcm" || e == ".dicom";
}

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> out;
  for (const auto& in : inputs) {
    const fs::path p(in);
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> found;
      for (const auto& e : fs::recursive_directory_iterator(p, ec))
        if (e.is_regular_file() && is_image_file(e.path().string())) found.push_back(e.path().string());
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
      while (std::getline(lines, line)) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
        if (line.empty()) continue;
        out.push_back(fs::path(line).is_absolute() ? line : (p.parent_path() / line).string());
      }
    } else {
      out.push_back(in);
    }
  }
  return out;
}

void MimicInputFlags::add_to(CLI::App* c, const std::string& extra_help) {
  auto* mimic = c->add_option("--mimic", root,
                              "MIMIC-CXR-JPG root (files/ and the mimic-cxr-2.0.0-*.csv(.gz)): the images of --split and --views" +
                                  extra_help);
  c->add_option("--split", split, "With --mimic: the split (split.csv's train, validate or test)")->capture_default_str()->needs(mimic);
  c->add_option("--views", views, "With --mimic: ViewPosition values kept, comma-separated, or all")
      ->delimiter(',')
      ->capture_default_str()
      ->needs(mimic);
}

CLI::Validator at_least(long long min) {
  const std::string bound = std::to_string(min);
  return CLI::Validator(
      [min, bound](std::string& text) -> std::string {
        size_t used = 0;
        long long v = 0;
        try {
          v = std::stoll(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != text.size()) return "Value " + text + " is not an integer";
        return v < min ? "Value " + text + " is below " + bound : std::string();
      },
      "INT >= " + bound);
}

CLI::Option* add_centre_option(CLI::App* c, double& weight, const std::string& films) {
  return c->add_option("--centre", weight,
                       "Centred reading: every map minus this weight (0-1; 0 = off) times its mean over reference films\n(" +
                           films +
                           "),\ntaking out what a prompt lights in every film (shared anatomy, a film's corners). 0.5 with\n"
                           "--contrast 0.5 pointed best on the phantom world. Not in the authors' protocol")
      ->check(CLI::Range(0.0, 1.0));
}

std::vector<std::string> view_positions(const std::vector<std::string>& given) {
  std::vector<std::string> out;
  for (const auto& v : given)
    if (!v.empty() && v != "all") out.push_back(v);
  return out;
}

std::vector<std::string> MimicInputFlags::images() const {
  if (root.empty()) return {};
  data::MimicOptions mo;
  mo.root = root;
  mo.splits = {split};
  mo.views = view_positions(views);
  mo.read_reports = false;
  mo.progress = true;
  const data::PairList pl = data::read_mimic(mo);
  if (pl.skipped.total() > 0) log::warn(root + ": " + pl.skipped.summary());
  const std::string v = join(mo.views, ",");
  if (pl.samples.empty())
    throw Error(root + ": no image of split '" + split + "'" + (mo.views.empty() ? "" : " and views " + v) + " (" +
                pl.skipped.summary() + ")");
  log::info(root + ": " + std::to_string(pl.samples.size()) + " images of split '" + split + "'" +
            (mo.views.empty() ? "" : ", views " + v));
  std::vector<std::string> out;
  for (const auto& s : pl.samples) out.push_back(s.image);
  return out;
}

void DicomVoiFlag::add_to(CLI::App* c) {
  c->add_option("--dicom-voi", name,
                "DICOM to 8 bits: auto (SPEC §4: rescale, VOI window else min-max, MONOCHROME1 inverted), minmax, or\n"
                "authors (their read_from_dicom); use what the model was trained with")
      ->check(CLI::IsMember(data::dicom_voi_names()));
}

data::ImageReadOptions DicomVoiFlag::read_options() const {
  data::ImageReadOptions r;
  r.dicom_voi = data::parse_dicom_voi(name);
  return r;
}

void DicomVoiFlag::echo_into(nlohmann::ordered_json& echo) const {
  if (name != "auto") echo["dicom_voi"] = name;
}

ImageBatch read_images(const std::vector<std::string>& paths, size_t start, size_t end, Failures& failed, ProgressBar& bar,
                       const data::ImageReadOptions& read) {
  ImageBatch b;
  for (size_t i = start; i < std::min(paths.size(), end); ++i) {
    try {
      b.images.push_back(data::read_gray8(paths[i], read));
      b.names.push_back(paths[i]);
    } catch (const std::exception& e) {
      failed.emplace_back(paths[i], e.what());
      log::warn(e.what());
    }
    bar.update(1);
  }
  return b;
}

void report_failures(const Failures& failed, size_t total) {
  if (failed.empty()) return;
  std::printf("%zu images failed:\n", failed.size());
  for (const auto& [img, why] : failed) std::printf("  %s\n", why.c_str());
  throw Error(std::to_string(failed.size()) + " of " + std::to_string(total) +
              " images could not be read (listed above; the rest are done)");
}

void PromptCacheFlags::add_to(CLI::App* c) {
  c->add_option("--prompt-cache", dir,
                "Folder of the on-disk prompt-embedding cache (default: $AFLOC_CACHE_DIR, $XDG_CACHE_HOME/afloc or ~/.cache/afloc)");
  c->add_flag("--no-prompt-cache", off, "Keep prompt embeddings in memory only");
}

std::string PromptCacheFlags::resolved() const {
  if (off) return "";
  return dir.empty() ? infer::default_prompt_cache_dir() : dir;
}

EarlierRun resume_earlier_run(const std::string& results, const std::string& echo_file, const nlohmann::ordered_json& echo,
                              const std::vector<std::string>& images,
                              const std::function<bool(const std::vector<nlohmann::ordered_json>&)>& complete) {
  EarlierRun r;
  if (!path_exists(results) || !path_exists(echo_file)) {
    log::info("--resume: no earlier run in " + fs::path(results).parent_path().string() + "; starting");
    r.todo = images;
    return r;
  }
  nlohmann::ordered_json before;
  try {
    before = nlohmann::ordered_json::parse(read_file(echo_file));
  } catch (const nlohmann::json::exception& e) {
    throw Error(echo_file + ": not JSON (" + std::string(e.what()) + ")");
  }
  if (before != echo) {
    std::string keys;
    for (const auto& [k, v] : echo.items()) {
      if (!before.contains(k) || before.at(k) != v) keys += (keys.empty() ? "" : ", ") + k;
    }
    throw Error("--resume: " + echo_file + " was written with other " + (keys.empty() ? std::string("settings") : keys) +
                " than this command's; resume with the same models, prompts and options, or choose another --out");
  }
  std::map<std::string, std::vector<nlohmann::ordered_json>> by_image;
  std::istringstream lines(read_file(results));
  std::string line;
  while (std::getline(lines, line)) {
    nlohmann::ordered_json rec;
    try {
      rec = nlohmann::ordered_json::parse(line);
    } catch (const nlohmann::json::exception&) {
      continue;  // the last line of a killed run may be cut short
    }
    if (!rec.is_object() || rec.contains("error") || !rec.contains("image") || !rec["image"].is_string()) continue;
    by_image[rec["image"].get<std::string>()].push_back(std::move(rec));
  }
  std::string kept;
  for (const auto& img : images) {
    auto it = by_image.find(img);
    if (it == by_image.end() || r.done.count(img) || !complete(it->second)) {
      r.todo.push_back(img);
      continue;
    }
    for (const auto& rec : it->second) kept += rec.dump() + "\n";
    r.records += static_cast<int64_t>(it->second.size());
    r.done[img] = std::move(it->second);
  }
  write_file_atomic(results, kept);
  if (r.todo.size() < images.size()) {
    log::info("--resume: " + std::to_string(images.size() - r.todo.size()) + " of " + std::to_string(images.size()) +
              " images already done in " + fs::path(results).parent_path().string() + "; " + std::to_string(r.todo.size()) +
              " to go");
  }
  return r;
}

}  // namespace afloc::cli
