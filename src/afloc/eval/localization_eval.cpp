#include "afloc/eval/localization_eval.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>

#include "afloc/common/error.h"
#include "afloc/common/json_number.h"
#include "afloc/common/progress.h"
#include "afloc/common/strings.h"
#include "afloc/data/csv.h"
#include "afloc/data/image.h"
#include "afloc/data/image_file.h"
#include "afloc/infer/classifier.h"
#include "afloc/infer/localizer.h"
#include "afloc/infer/prompt_bank.h"
#include "afloc/infer/prompt_encoder.h"

namespace fs = std::filesystem;

namespace afloc::eval {
namespace {

Map to_map(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kCPU, torch::kFloat).contiguous();
  return Map(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// All overlays on one sheet, 6 per row.
void write_sheet(const std::string& path, const std::vector<cv::Mat>& tiles) {
  if (tiles.empty()) return;
  const int cols = std::min<int>(6, static_cast<int>(tiles.size()));
  const int rows = (static_cast<int>(tiles.size()) + cols - 1) / cols;
  const int w = tiles[0].cols, h = tiles[0].rows;
  cv::Mat sheet(rows * h, cols * w, CV_8UC3, cv::Scalar(20, 20, 20));
  for (size_t i = 0; i < tiles.size(); ++i) {
    if (tiles[i].size() != tiles[0].size()) continue;
    tiles[i].copyTo(sheet(cv::Rect(static_cast<int>(i % static_cast<size_t>(cols)) * w, static_cast<int>(i / static_cast<size_t>(cols)) * h, w, h)));
  }
  data::write_image_file(path, sheet);
}

}  // namespace

std::vector<GtImage> read_phantom_ground_truth(const std::string& world_dir, const std::vector<std::string>& splits) {
  const std::string path = (fs::path(world_dir) / "ground_truth" / "instances.jsonl").string();
  std::istringstream in(read_file(path));
  std::vector<GtImage> out;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    with_context(path + " line " + std::to_string(n), [&] {
      const auto j = nlohmann::json::parse(line);
      const std::string split = j.at("split").get<std::string>();
      if (std::find(splits.begin(), splits.end(), split) == splits.end()) return 0;
      GtImage g;
      g.id = j.at("dicom_id").get<std::string>();
      g.image = (fs::path(world_dir) / j.at("image").get<std::string>()).string();
      for (const auto& inst : j.at("instances")) {
        GtInstance gi;
        gi.category = inst.at("category").get<std::string>();
        gi.mask = (fs::path(world_dir) / inst.at("mask").get<std::string>()).string();
        if (inst.contains("boxes_xywh"))
          for (const auto& b : inst.at("boxes_xywh")) gi.boxes.push_back(b.get<std::vector<double>>());
        g.instances.push_back(std::move(gi));
      }
      out.push_back(std::move(g));
      return 0;
    });
  }
  return out;
}

const std::vector<std::string>& truth_names() {
  static const std::vector<std::string> names{"masks", "boxes"};
  return names;
}

Truth truth_from_name(const std::string& name) {
  if (name == "masks") return Truth::kMasks;
  if (name == "boxes") return Truth::kBoxes;
  throw Error("unknown ground truth '" + name + "' (known: masks, boxes)");
}

std::string truth_name(Truth t) { return t == Truth::kBoxes ? "boxes" : "masks"; }

std::string prompt_for(const std::string& tmpl, const std::string& category) {
  std::string p = tmpl;
  const size_t at = p.find("{finding}");
  // A template without {finding} gives every finding the same heatmap: a control for how much of
  // the localization is prompt-independent.
  if (at == std::string::npos) return p;
  return p.replace(at, 9, ascii_lower(category));
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> peak_pixels(int64_t h, int64_t w, int64_t size,
                                                                  const infer::HeatmapOptions& o) {
  if (o.interpolation != "bilinear") return {};
  const int64_t margin = infer::margin_pixels(o, size);
  const int64_t lo = std::min(margin, size - 1), hi = std::max(lo, size - 1 - margin);
  auto axis = [&](int64_t n) {
    std::set<int64_t> c;
    for (int64_t i = 0; i < n; ++i) {
      const double x = (static_cast<double>(i) + 0.5) * static_cast<double>(size) / static_cast<double>(n) - 0.5;
      for (const double v : {std::floor(x), std::ceil(x)}) c.insert(std::clamp(static_cast<int64_t>(v), lo, hi));
    }
    c.insert(lo);  // a map flat beyond the first centre: arg-max takes the first valid pixel
    return std::vector<int64_t>(c.begin(), c.end());
  };
  return {axis(h), axis(w)};
}

torch::Tensor centre_prior(int64_t size) {
  const auto s = static_cast<double>(size);
  const torch::Tensor y = (torch::arange(size, torch::kFloat) + 0.5f - static_cast<float>(0.45 * s)).pow(2);
  const torch::Tensor x = (torch::arange(size, torch::kFloat) + 0.5f - static_cast<float>(0.5 * s)).pow(2);
  const double sig = 0.2 * s;
  return torch::exp(-(y.unsqueeze(1) + x.unsqueeze(0)) / static_cast<float>(2 * sig * sig));
}

namespace {

/// SPEC §5's 95% intervals: resample the cases (all categories together, as the authors' bootci),
/// take each category's and the macro mean per resample, and the percentile interval of those.
void bootstrap_intervals(LocEvalResult& res, int64_t replicates, uint64_t seed) {
  std::map<std::string, int64_t> index;
  for (const auto& [cat, summary] : res.model) index.emplace(cat, static_cast<int64_t>(index.size()));
  const auto k = static_cast<int64_t>(index.size());
  std::vector<int64_t> category;
  std::vector<double> hit, iou, cnr, base_iou;
  for (const auto& c : res.cases) {
    category.push_back(index.at(c.category));
    hit.push_back(c.hit ? 1.0 : 0.0);
    iou.push_back(c.iou);
    cnr.push_back(c.cnr);
    base_iou.push_back(c.baseline_iou);
  }
  const auto samples = bootstrap_samples(static_cast<int64_t>(res.cases.size()), replicates, seed);
  // replicate statistics: [metric][category or k = macro][replicate]
  std::vector<std::vector<std::vector<double>>> rep(3, std::vector<std::vector<double>>(static_cast<size_t>(k + 1)));
  const std::vector<double>* series[3] = {&hit, &iou, &cnr};
  std::vector<double> ratio;  // macro IoU over the prior's macro IoU, same resample
  for (const auto& s : samples) {
    for (size_t m = 0; m < 3; ++m) {
      const auto [means, macro] = resample_means(category, *series[m], k, s);
      for (int64_t c = 0; c < k; ++c) rep[m][static_cast<size_t>(c)].push_back(means[static_cast<size_t>(c)]);
      rep[m][static_cast<size_t>(k)].push_back(macro);
    }
    ratio.push_back(rep[1][static_cast<size_t>(k)].back() / resample_means(category, base_iou, k, s).second);
  }
  auto row = [&rep](size_t c) {
    return RowIntervals{percentile_interval(rep[0][c]), percentile_interval(rep[1][c]), percentile_interval(rep[2][c])};
  };
  for (int64_t c = 0; c < k; ++c) res.model_ci.push_back(row(static_cast<size_t>(c)));
  res.model_macro_ci = row(static_cast<size_t>(k));
  res.iou_over_baseline_ci = percentile_interval(ratio);
  res.bootstrap = replicates;
}

}  // namespace

LocEvalResult evaluate_localization(model::AflocModel& net, const std::vector<GtImage>& images, const LocEvalOptions& o) {
  std::vector<model::AflocModel> nets{net};
  return evaluate_localization(nets, images, o);
}

LocEvalResult evaluate_localization(std::vector<model::AflocModel>& nets, const std::vector<GtImage>& images,
                                    const LocEvalOptions& o) {
  if (nets.empty()) throw Error("evaluate_localization: no model");
  infer::check_reading_weights(o.contrast, o.centre);  // before any film is read
  torch::NoGradGuard ng;
  const int64_t E = o.eval_size;
  LocEvalResult res;
  res.map_side = nets[0]->config().deep_side();
  res.dense_map = nets[0]->config().dense_map;
  res.heatmap_levels = nets[0]->config().heatmap_levels;
  for (size_t k = 1; k < nets.size(); ++k)
    if (nets[k]->config().heatmap_levels != res.heatmap_levels) res.heatmap_levels = "mixed";
  res.n_models = static_cast<int64_t>(nets.size());
  // Heatmaps are averaged at the evaluation size, so models with other map sides can join; the
  // pointing game then has no single ceiling (map_side 0).
  for (size_t k = 0; k < nets.size(); ++k)
    if (nets[k]->config().deep_side() != res.map_side || nets[k]->config().reads_shallow()) res.map_side = 0;
  std::set<std::string> cats;
  for (const auto& im : images)
    for (const auto& inst : im.instances) {
      cats.insert(inst.category);
      if (o.truth != Truth::kBoxes) continue;
      // Checked before any film is read.
      if (inst.boxes.empty())
        throw Error("ground truth boxes: " + im.image + " has a " + inst.category + " finding without boxes");
      for (const auto& b : inst.boxes)
        if (b.size() != 4 || !(b[2] > 0 && b[3] > 0))
          throw Error("ground truth boxes: " + im.image + " has a " + inst.category +
                      " box that is not (x, y, w, h) with w, h > 0");
    }
  res.truth = o.truth;
  if (o.classify && !cats.empty()) res.class_names.assign(cats.begin(), cats.end());
  if (o.contrast > 0) {
    if (cats.size() < 2) {
      throw Error("eval-phantom --contrast: the ground truth names " + std::to_string(cats.size()) +
                  " finding(s); the contrast reading needs 2 or more (e.g. --split test unseen)");
    }
    if (o.prompt_template.find("{finding}") == std::string::npos) {
      throw Error("eval-phantom --contrast: the prompt '" + o.prompt_template +
                  "' has no {finding}, so every finding's prompt is the same and the contrast is zero");
    }
    res.contrast = o.contrast;
    res.contrast_references = static_cast<int64_t>(cats.size());
  }
  // The centred reading: each model's mean maps over the reference films.
  std::vector<std::vector<torch::Tensor>> centre_means;
  if (o.centre > 0) {
    centre_means = infer::mean_maps(nets, o.centre_films, o.batch, {}, o.progress);
    res.centre = o.centre;
    res.centre_films = static_cast<int64_t>(o.centre_films.size());
  }
  // Per model: one report vector per category prompt and the classification head from the authors'
  // prompt sets (each model has its own text encoder and vocabulary).
  std::vector<std::map<std::string, torch::Tensor>> query(nets.size());
  std::vector<infer::ClassHead> heads(nets.size());
  for (size_t k = 0; k < nets.size(); ++k) {
    nets[k]->eval();
    infer::PromptEncoder encoder(nets[k], o.prompt_cache_dir);
    for (const auto& cat : cats) query[k][cat] = encoder.encode(prompt_for(o.prompt_template, cat));
    if (o.contrast > 0) {
      std::vector<torch::Tensor> all;
      for (const auto& cat : cats) all.push_back(query[k][cat]);
      const torch::Tensor references = torch::stack(all);
      for (auto& [cat, q] : query[k]) q = infer::contrast_queries(q.unsqueeze(0), references, o.contrast)[0];
    }
    if (!res.class_names.empty()) heads[k] = infer::build_class_head(encoder, infer::cxr_bank(res.class_names));
  }
  const torch::Tensor prior = infer::normalize(centre_prior(E), infer::margin_pixels(o.heatmap, E));
  const Map prior_map = to_map(prior);
  const auto peaks = res.map_side > 0 ? peak_pixels(res.map_side, res.map_side, E, o.heatmap)
                                       : std::pair<std::vector<int64_t>, std::vector<int64_t>>{};

  // The overlays' third title line: the readings that are not the authors' (a 224-px tile holds
  // about 35 characters a line).
  std::string reading;
  const auto add_reading = [&reading](const char* name, double w) {
    if (w <= 0) return;
    char part[48];
    std::snprintf(part, sizeof part, "%s%s %g", reading.empty() ? "\n" : ", ", name, w);
    reading += part;
  };
  add_reading("contrast", o.contrast);
  add_reading("centred", o.centre);
  LocalizationMetric mm, bm;
  ProgressBar bar("evaluate", static_cast<int64_t>(images.size()), "img", o.progress);
  int64_t overlays = 0;
  std::vector<cv::Mat> tiles;
  for (size_t start = 0; start < images.size(); start += static_cast<size_t>(o.batch)) {
    const size_t end = std::min(images.size(), start + static_cast<size_t>(o.batch));
    std::vector<data::Gray8> gray, shown;
    for (size_t i = start; i < end; ++i) {
      gray.push_back(data::read_gray8(images[i].image));
      shown.push_back(data::resize_pad(gray.back(), E));
    }
    // Each model's maps of the batch (heatmap_levels); an ensemble averages the models'
    // probabilities, and below the normalised heatmaps of all their maps.
    std::vector<std::vector<torch::Tensor>> levels;
    torch::Tensor prob;
    for (size_t k = 0; k < nets.size(); ++k) {
      const model::ImageEmbeddings emb = infer::image_embeddings(nets[k], gray);
      levels.push_back(model::heatmap_maps(nets[k]->config(), emb));
      if (o.centre > 0) infer::centre_maps(levels.back(), centre_means[k], o.centre);
      const int64_t side = nets[k]->config().deep_side();
      TORCH_CHECK(emb.deep.size(2) == side && emb.deep.size(3) == side, "deep map ", emb.deep.sizes(),
                  " but the config's deep side is ", side);
      if (!res.class_names.empty()) {
        const torch::Tensor p = infer::class_probabilities(emb.global, heads[k]).cpu().to(torch::kDouble);
        prob = prob.defined() ? prob + p : p;
      }
    }
    if (prob.defined()) prob = (prob / static_cast<double>(nets.size())).contiguous();
    for (size_t i = start; i < end; ++i) {
      const auto& im = images[i];
      if (prob.defined()) {
        const double* p = prob[static_cast<int64_t>(i - start)].data_ptr<double>();
        res.probabilities.emplace_back(p, p + prob.size(1));
        std::vector<int> y(res.class_names.size(), 0);
        for (const auto& inst : im.instances)
          y[static_cast<size_t>(std::find(res.class_names.begin(), res.class_names.end(), inst.category) - res.class_names.begin())] = 1;
        res.labels.push_back(std::move(y));
        res.image_ids.push_back(im.id);
      }
      // Several instances of one category in an image form one G (as MS-CXR merges a phrase's
      // boxes): masks united; boxes mapped into the E-px square and summed, as the authors' box2mask.
      struct Region {
        Map g;  // G as the metrics read it
        std::vector<std::array<int64_t, 4>> boxes;  // drawn on the overlay (boxes)
      };
      std::map<std::string, Region> regions;
      const data::Gray8& film = gray[i - start];
      for (const auto& inst : im.instances) {
        Region& r = regions[inst.category];
        if (r.g.empty()) r.g.assign(static_cast<size_t>(E * E), 0.0f);
        if (o.truth == Truth::kMasks) {
          const data::Gray8 m = data::resize_mask(data::read_gray8(inst.mask), E);
          for (size_t p = 0; p < m.pixels.size(); ++p)
            if (m.pixels[p]) r.g[p] = 1.0f;
        } else {
          for (const auto& b : inst.boxes) {
            const auto xywh = box_mapping(b, film.width, film.height, E);
            add_box(r.g, xywh, E, E);
            r.boxes.push_back({xywh[0], xywh[1], xywh[2], xywh[3]});
          }
        }
      }
      for (const auto& [cat, region] : regions) {
        const Map& gm = region.g;
        std::vector<torch::Tensor> sims;
        for (size_t k = 0; k < nets.size(); ++k)
          for (const auto& level : levels[k])
            sims.push_back(infer::similarity_map(level[static_cast<int64_t>(i - start)], query[k].at(cat)).cpu());
        const torch::Tensor heat = infer::mean_heatmap(sims, E, o.heatmap);
        const Map hm = to_map(heat);
        const auto model = mm.update(cat, gm, hm), base = bm.update(cat, gm, prior_map);
        bool reachable = false;
        for (const int64_t y : peaks.first)
          for (const int64_t x : peaks.second) reachable = reachable || gm[static_cast<size_t>(y * E + x)] != 0;
        const int64_t peak = peak_index(hm);
        res.cases.push_back({im.id, cat, model.iou, model.dice, model.cnr, base.iou, base.cnr, model.hit, base.hit, reachable,
                             peak < 0 ? -1 : peak % E, peak < 0 ? -1 : peak / E, peak_distance(gm, peak, E)});
        if (!o.overlays_dir.empty() && overlays < o.n_overlays) {
          char name[64];
          std::snprintf(name, sizeof name, "%03lld_", static_cast<long long>(overlays));
          const std::string path = (fs::path(o.overlays_dir) / (name + infer::slug(cat) + ".png")).string();
          data::Gray8 outline{E, E, std::vector<uint8_t>(gm.size())};  // the mask's (boxes are drawn as boxes)
          for (size_t p = 0; p < gm.size(); ++p) outline.pixels[p] = gm[p] != 0 ? 255 : 0;
          infer::write_overlay(path, shown[i - start], heat, prompt_for(o.prompt_template, cat) +
                                   (res.cases.back().hit ? "\npointing game: hit" : "\npointing game: miss") + reading,
                               region.boxes, o.truth == Truth::kMasks ? &outline : nullptr);
          tiles.push_back(cv::imread(path));
          ++overlays;
        }
      }
      bar.update(1);
    }
  }
  bar.finish();
  if (!o.overlays_dir.empty()) write_sheet((fs::path(o.overlays_dir) / "sheet.png").string(), tiles);
  res.model = mm.aggregate();
  res.baseline = bm.aggregate();
  res.model_macro = mm.macro();
  // Per category (res.model's order): the share of its cases whose mask holds a reachable pixel.
  for (const auto& [cat, summary] : res.model) {
    int64_t n = 0, reachable = 0;
    for (const auto& c : res.cases)
      if (c.category == cat) {
        ++n;
        reachable += c.hit_ceiling;
      }
    res.hit_ceiling.push_back(!peaks.first.empty() && n > 0 ? static_cast<double>(reachable) / static_cast<double>(n) : std::nan(""));
  }
  double total = 0;
  for (const double c : res.hit_ceiling) total += c;
  res.hit_ceiling_macro = res.hit_ceiling.empty() ? std::nan("") : total / static_cast<double>(res.hit_ceiling.size());
  res.baseline_macro = bm.macro();
  if (o.bootstrap > 0) bootstrap_intervals(res, o.bootstrap, o.bootstrap_seed);
  if (!res.class_names.empty()) res.classification = evaluate_classification(res.class_names, res.probabilities, res.labels);
  return res;
}

std::string write_localization_report(const LocEvalResult& r, const std::string& out_dir) {
  fs::create_directories(out_dir);
  nlohmann::ordered_json j{{"categories", nlohmann::ordered_json::object()}};
  std::ostringstream t;
  char line[256];
  std::snprintf(line, sizeof line, "%-22s %5s | %8s %8s %8s %8s %8s | %8s %8s %8s\n", "category", "n", "hit", "ceiling",
                "mIoU", "Dice", "CNR", "base hit", "base IoU", "IoU/base");
  t << line << std::string(std::strlen(line) - 1, '-') << "\n";
  auto row = [&](const std::string& name, const LocalizationMetric::Summary& m, double ceiling,
                 const LocalizationMetric::Summary& b) {
    char ceil[16] = "-";  // no ceiling: another interpolation, or an ensemble of map sides
    if (!std::isnan(ceiling)) std::snprintf(ceil, sizeof ceil, "%.3f", ceiling);
    std::snprintf(line, sizeof line, "%-22s %5lld | %8.3f %8s %8.3f %8.3f %8.3f | %8.3f %8.3f %8.2f\n", name.c_str(),
                  static_cast<long long>(m.n), m.hit_rate, ceil, m.iou, m.dice, m.cnr, b.hit_rate, b.iou,
                  b.iou > 0 ? m.iou / b.iou : std::nan(""));
    t << line;
  };
  // Median distance of the misses' arg-max to their mask, per category.
  auto median_miss = [&r](const std::string& cat) {
    std::vector<double> d;
    for (const auto& c : r.cases)
      if (c.category == cat && !c.hit && !std::isnan(c.peak_distance)) d.push_back(c.peak_distance);
    if (d.empty()) return std::nan("");
    std::sort(d.begin(), d.end());
    return d.size() % 2 ? d[d.size() / 2] : 0.5 * (d[d.size() / 2 - 1] + d[d.size() / 2]);
  };
  auto interval = [](const Interval& v) {
    return nlohmann::ordered_json::array({number_or_null(v.lower), number_or_null(v.upper)});
  };
  auto intervals = [&interval](const RowIntervals& v) {
    return nlohmann::ordered_json{{"hit_rate", interval(v.hit_rate)}, {"iou", interval(v.iou)}, {"cnr", interval(v.cnr)}};
  };
  for (size_t i = 0; i < r.model.size(); ++i) {
    const auto& [cat, m] = r.model[i];
    const auto& b = r.baseline[i].second;
    const double ceiling = i < r.hit_ceiling.size() ? r.hit_ceiling[i] : std::nan("");
    row(cat, m, ceiling, b);
    j["categories"][cat] = {{"n", m.n},
                            {"hit_rate", number_or_null(m.hit_rate)},
                            {"hit_ceiling", number_or_null(ceiling)},
                            {"median_miss_distance_px", number_or_null(median_miss(cat))},
                            {"iou", number_or_null(m.iou)},
                            {"dice", number_or_null(m.dice)},
                            {"cnr", number_or_null(m.cnr)},
                            {"baseline_hit_rate", number_or_null(b.hit_rate)},
                            {"baseline_iou", number_or_null(b.iou)},
                            {"baseline_cnr", number_or_null(b.cnr)}};
    if (i < r.model_ci.size()) j["categories"][cat]["ci95"] = intervals(r.model_ci[i]);
  }
  t << std::string(std::strlen(line) - 1, '-') << "\n";
  row("macro mean", r.model_macro, r.hit_ceiling_macro, r.baseline_macro);
  if (r.map_side > 0) {
    std::snprintf(line, sizeof line,
                  "ceiling: the highest hit rate any %lldx%lld map can reach (its arg-max lies next to a cell centre)%s\n",
                  static_cast<long long>(r.map_side), static_cast<long long>(r.map_side),
                  r.dense_map ? "; shift-and-stitched map (--dense-map)" : "");
    t << line;
  } else {
    t << "ceiling: none (heatmaps averaged over maps of different sides, or read from the shallow map)\n";
  }
  t << (r.truth == Truth::kBoxes
            ? "ground truth: each finding's boxes (box_mapping + box2mask, overlaps summed), as MS-CXR and RSNA are scored\n"
            : "ground truth: each finding's pixel mask\n");
  if (r.heatmap_levels != "deep") t << "maps read: " << r.heatmap_levels << " (heatmap_levels; the authors' read deep)\n";
  if (r.n_models > 1) t << "ensemble: heatmaps and probabilities averaged over " << r.n_models << " models\n";
  if (r.contrast_references > 0) {
    std::snprintf(line, sizeof line,
                  "contrast reading (--contrast %g): each finding's map minus %g x the mean map of the %lld findings' prompts\n",
                  r.contrast, r.contrast, static_cast<long long>(r.contrast_references));
    t << line;
  }
  if (r.centre_films > 0) {
    std::snprintf(line, sizeof line,
                  "centred reading (--centre %g): each map minus %g x its mean over %lld reference films\n", r.centre,
                  r.centre, static_cast<long long>(r.centre_films));
    t << line;
  }
  if (r.bootstrap > 0) {
    const auto& c = r.model_macro_ci;
    std::snprintf(line, sizeof line,
                  "95%% CI of the macro row (%lld bootstrap resamples of the %zu cases): hit %.3f-%.3f, mIoU %.3f-%.3f, "
                  "CNR %.3f-%.3f, IoU/base %.2f-%.2f\n",
                  static_cast<long long>(r.bootstrap), r.cases.size(), c.hit_rate.lower, c.hit_rate.upper, c.iou.lower,
                  c.iou.upper, c.cnr.lower, c.cnr.upper, r.iou_over_baseline_ci.lower, r.iou_over_baseline_ci.upper);
    t << line;
  }
  j["truth"] = truth_name(r.truth);
  j["map_side"] = r.map_side > 0 ? nlohmann::ordered_json(r.map_side) : nlohmann::ordered_json(nullptr);
  j["dense_map"] = r.dense_map;
  j["heatmap_levels"] = r.heatmap_levels;
  j["models"] = r.n_models;
  j["contrast"] = r.contrast;
  j["contrast_references"] = r.contrast_references;
  j["centre"] = r.centre;
  j["centre_films"] = r.centre_films;
  j["macro"] = {{"n", r.model_macro.n},
                {"hit_rate", number_or_null(r.model_macro.hit_rate)},
                {"hit_ceiling", number_or_null(r.hit_ceiling_macro)},
                {"iou", number_or_null(r.model_macro.iou)},
                {"dice", number_or_null(r.model_macro.dice)},
                {"cnr", number_or_null(r.model_macro.cnr)},
                {"baseline_hit_rate", number_or_null(r.baseline_macro.hit_rate)},
                {"baseline_iou", number_or_null(r.baseline_macro.iou)},
                {"baseline_cnr", number_or_null(r.baseline_macro.cnr)}};
  if (r.bootstrap > 0) {
    j["macro"]["ci95"] = intervals(r.model_macro_ci);
    j["macro"]["ci95"]["iou_over_baseline"] = interval(r.iou_over_baseline_ci);
    // The last row of the authors' test_*_summary_results.csv: the mean of the categories' bounds
    // (wider than the interval of the macro mean above).
    RowIntervals mean_bounds;
    auto mean_of = [&r](auto member, bool upper) {
      std::vector<double> v;
      for (const auto& c : r.model_ci) v.push_back(upper ? (c.*member).upper : (c.*member).lower);
      return nanmean(v);
    };
    mean_bounds.hit_rate = {mean_of(&RowIntervals::hit_rate, false), mean_of(&RowIntervals::hit_rate, true)};
    mean_bounds.iou = {mean_of(&RowIntervals::iou, false), mean_of(&RowIntervals::iou, true)};
    mean_bounds.cnr = {mean_of(&RowIntervals::cnr, false), mean_of(&RowIntervals::cnr, true)};
    j["macro"]["ci95_mean_of_category_bounds"] = intervals(mean_bounds);
    j["bootstrap"] = {{"replicates", r.bootstrap}, {"resampled", "cases, all categories together (the authors' bootci)"},
                      {"interval", "percentile: sorted replicates [int(0.025 R) - 1], [int(0.975 R) - 1]"}};
  }
  std::string csv = data::csv_row({"id", "category", "hit", "iou", "dice", "cnr", "baseline_hit", "baseline_iou", "baseline_cnr", "hit_ceiling", "peak_x", "peak_y", "peak_distance_px"});
  auto f = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.6f", v);
    return std::string(std::isnan(v) ? "" : b);
  };
  const bool no_ceiling = std::isnan(r.hit_ceiling_macro);  // another interpolation, or mixed map sides
  for (const auto& c : r.cases) {
    csv += data::csv_row({c.id, c.category, c.hit ? "1" : "0", f(c.iou), f(c.dice), f(c.cnr), c.baseline_hit ? "1" : "0",
                          f(c.baseline_iou), f(c.baseline_cnr), no_ceiling ? "" : c.hit_ceiling ? "1" : "0",
                          std::to_string(c.peak_x), std::to_string(c.peak_y), f(c.peak_distance)});
  }
  write_file_atomic((fs::path(out_dir) / "cases.csv").string(), csv);
  if (!r.class_names.empty()) {
    t << "\nzero-shot classification (binary, the authors' chest X-ray prompt sets; chance AUROC 0.5)\n"
      << classification_table(r.classification, false);
    nlohmann::ordered_json per = nlohmann::ordered_json::object();
    for (const auto& c : r.classification.classes)
      per[c.name] = {{"n_pos", c.n_pos}, {"n_neg", c.n_neg}, {"auroc", number_or_null(c.auroc)}};
    j["classification"] = {{"classes", per}, {"macro_auroc", number_or_null(r.classification.macro_auroc)}};
    std::vector<std::string> header = {"id"};
    for (const auto& c : r.class_names) header.push_back("p:" + c);
    for (const auto& c : r.class_names) header.push_back("label:" + c);
    std::string ccsv = data::csv_row(header);
    for (size_t i = 0; i < r.image_ids.size(); ++i) {
      std::vector<std::string> row = {r.image_ids[i]};
      for (double p : r.probabilities[i]) row.push_back(f(p));
      for (int y : r.labels[i]) row.push_back(std::to_string(y));
      ccsv += data::csv_row(row);
    }
    write_file_atomic((fs::path(out_dir) / "classification.csv").string(), ccsv);
  }
  write_file_atomic((fs::path(out_dir) / "metrics.json").string(), j.dump(2) + "\n");
  write_file_atomic((fs::path(out_dir) / "table.txt").string(), t.str());
  return t.str();
}

}  // namespace afloc::eval
