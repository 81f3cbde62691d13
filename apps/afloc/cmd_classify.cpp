// `afloc classify`: zero-shot diagnosis of users' images with prompt banks (SPEC §4).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "afloc/common/error.h"
#include "afloc/common/json_number.h"
#include "afloc/common/log.h"
#include "afloc/common/progress.h"
#include "afloc/data/csv.h"
#include "afloc/data/datasets.h"
#include "afloc/data/image.h"
#include "afloc/eval/classification_eval.h"
#include "afloc/infer/classifier.h"
#include "afloc/infer/prompt_bank.h"
#include "afloc/io/model_io.h"
#include "commands.h"
#include "inputs.h"

namespace fs = std::filesystem;

namespace afloc::cli {
namespace {

struct ClassifyCli {
  std::vector<std::string> models;
  std::string bank = "chexpert5", prompt_file, mode, labels, out = "classify";
  std::vector<std::string> categories, inputs;
  MimicInputFlags mimic;
  DicomVoiFlag dicom;
  int64_t batch = 16;
  double threshold = 0.5;
  bool resume = false;
  PromptCacheFlags cache;
};

infer::PromptBank choose_bank(const ClassifyCli& o) {
  infer::PromptBank b;
  if (!o.prompt_file.empty()) b = infer::read_prompt_bank(o.prompt_file);
  else if (!o.categories.empty()) b = infer::cxr_bank(o.categories);
  else b = infer::builtin_bank(o.bank);
  if (!o.mode.empty()) b.mode = infer::parse_classify_mode(o.mode);
  infer::validate(b);
  return b;
}

nlohmann::ordered_json bank_json(const infer::PromptBank& b) {
  nlohmann::ordered_json classes = nlohmann::ordered_json::object();
  for (const auto& c : b.classes) classes[c.name] = {{"pos", c.pos}, {"neg", c.neg}};
  return {{"name", b.name}, {"modality", b.modality}, {"mode", infer::to_string(b.mode)}, {"classes", classes}};
}

// Labels rows are matched to inputs by path (as given, or relative to the labels file), then by
// file name; rows naming MIMIC-CXR studies, by the folder holding the image (s{study_id}).
std::vector<std::vector<int>> align_labels(const eval::ClassLabels& lab, const std::string& labels_path,
                                           const std::vector<std::string>& images, size_t n_classes) {
  std::map<std::string, size_t> by_path, by_name;
  for (size_t r = 0; r < lab.images.size(); ++r) {
    const fs::path p(lab.images[r]);
    if (lab.by_study) {
      by_name[lab.images[r]] = r;
      continue;
    }
    by_path[p.lexically_normal().string()] = r;
    by_path[(fs::path(labels_path).parent_path() / p).lexically_normal().string()] = r;
    by_name[p.filename().string()] = r;
  }
  std::vector<std::vector<int>> out;
  int64_t unmatched = 0;
  for (const auto& im : images) {
    auto it = by_path.find(fs::path(im).lexically_normal().string());
    bool found = it != by_path.end();
    if (!found) {
      const fs::path p = fs::path(im).lexically_normal();
      it = by_name.find((lab.by_study ? p.parent_path().filename() : p.filename()).string());
      found = it != by_name.end();
    }
    if (!found) {
      ++unmatched;
      out.emplace_back(n_classes, -1);
    } else {
      out.push_back(lab.y[it->second]);
    }
  }
  if (unmatched > 0)
    log::warn(labels_path + ": " + std::to_string(unmatched) + " of " + std::to_string(images.size()) +
              " images have no labels row (excluded from the metrics)");
  return out;
}

}  // namespace

void register_classify_commands(CLI::App& app, GlobalOptions& g) {
  auto o = std::make_shared<ClassifyCli>();
  std::string banks;
  for (const auto& n : infer::builtin_bank_names()) banks += (banks.empty() ? "" : ", ") + n;
  auto* c = app.add_subcommand("classify", "Zero-shot diagnosis of images with prompt banks (per-class probabilities,\n"
                                           "AUROC / balanced accuracy against a labels CSV)");
  c->add_option("-M,--model", o->models,
                 "Model directory, training checkpoint or run directory; repeat it for an ensemble (probabilities\n"
                 "averaged over the models, each with its own text encoder)")
      ->required()
      ->allow_extra_args(false);
  c->add_option("--bank", o->bank, "Built-in prompt bank: " + banks);
  c->add_option("--categories", o->categories,
                "Chest X-ray categories, comma-separated (prompts built as the authors' table)")
      ->delimiter(',')
      ->allow_extra_args(false);
  c->add_option("--prompt-file", o->prompt_file, "JSON prompt bank (docs/inference.md)");
  c->add_option("--mode", o->mode, "binary (per-class pos/neg softmax) or multiclass (softmax over classes); default: the bank's");
  c->add_option("inputs", o->inputs, "Images, folders or lists (.csv with an image column, .txt)");
  o->mimic.add_to(c, ";\nits mimic-cxr-2.0.0-chexpert.csv gives the labels unless --labels names others");
  c->add_option("-o,--out", o->out, "Output directory");
  c->add_option("-b,--batch", o->batch, "Images per forward pass");
  o->dicom.add_to(c);
  c->add_option("--threshold", o->threshold, "Binary mode: a class is present when its probability exceeds this")
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--labels", o->labels,
                "Labels CSV (image column + one 1/0/-1 column per class, or a `label` column; or MIMIC-CXR's\n"
                "study_id-keyed chexpert/negbio CSV): writes metrics");
  c->add_flag("--resume", o->resume,
              "Continue an interrupted run into the same --out: images already in its results.jsonl are kept,\n"
              "the rest (and failed ones) are done; the models, bank and options must be the same");
  o->cache.add_to(c);
  c->callback([o, &g] {
    apply_global(g);
    if (o->batch < 1) throw Error("classify: --batch must be >= 1");
    const infer::PromptBank bank = choose_bank(*o);
    if (o->inputs.empty() && o->mimic.root.empty()) throw Error("classify: no inputs (images, folders, lists or --mimic ROOT)");
    auto images = expand_inputs(o->inputs);
    std::string labels = o->labels;
    if (!o->mimic.root.empty()) {
      const std::vector<std::string> mimic = o->mimic.images();
      images.insert(images.end(), mimic.begin(), mimic.end());
      const std::string chexpert = data::mimic_csv_path(o->mimic.root, "mimic-cxr-2.0.0-chexpert");
      if (labels.empty() && !chexpert.empty()) {
        labels = chexpert;
        log::info("labels: " + labels);
      }
    }
    if (images.empty()) throw Error("classify: no images found in the inputs");
    // Read before any image is classified, so that a bad labels file costs nothing.
    std::optional<eval::ClassLabels> lab;
    if (!labels.empty()) {
      std::vector<std::string> names;
      for (const auto& c : bank.classes) names.push_back(c.name);
      lab = eval::read_class_labels(labels, names);
    }
    std::vector<model::AflocModel> nets;
    std::vector<std::string> sources;
    std::vector<infer::ClassHead> heads;  // one per model: each encodes the bank with its own text side
    for (const auto& path : o->models) {
      io::LoadedModel m = io::load_model(path, torch::Device(g.device));
      m.model->optimize_for_inference();
      infer::PromptEncoder encoder(m.model, o->cache.resolved());
      heads.push_back(infer::build_class_head(encoder, bank));
      nets.push_back(m.model);
      sources.push_back(m.source);
      log::info("prompt bank '" + bank.name + "': " + std::to_string(bank.classes.size()) + " classes, " +
                std::to_string(encoder.computed()) + " prompts encoded, " + std::to_string(encoder.hits()) + " from cache" +
                (encoder.cache_file().empty() ? "" : " (" + encoder.cache_file() + ")"));
    }
    const infer::ClassHead& head = heads[0];
    fs::create_directories(o->out);
    nlohmann::ordered_json echo{{"model", sources.size() == 1 ? nlohmann::ordered_json(sources[0]) : nlohmann::ordered_json(sources)},
                                {"bank", bank_json(bank)},
                                {"threshold", o->threshold},
                                {"batch", o->batch}};
    o->dicom.echo_into(echo);
    const fs::path results_path = fs::path(o->out) / "results.jsonl", echo_path = fs::path(o->out) / "prompts.json";
    // Probabilities by image: from an earlier run (--resume) and from this one.
    std::map<std::string, std::vector<double>> rows;
    std::vector<std::string> todo = images;
    if (o->resume) {
      auto row_of = [&](const nlohmann::ordered_json& rec, std::vector<double>* row) {
        if (!rec.contains("scores") || !rec["scores"].is_object()) return false;
        for (const auto& name : head.names) {
          if (!rec["scores"].contains(name) || !rec["scores"][name].is_number()) return false;
          if (row) row->push_back(rec["scores"][name].get<double>());
        }
        return true;
      };
      const EarlierRun r = resume_earlier_run(results_path.string(), echo_path.string(), echo, images,
                                              [&](const std::vector<nlohmann::ordered_json>& recs) {
                                                return recs.size() == 1 && row_of(recs[0], nullptr);
                                              });
      todo = r.todo;
      for (const auto& [img, recs] : r.done) row_of(recs[0], &rows[img]);
    }
    write_file_atomic(echo_path.string(), echo.dump(2) + "\n");

    std::vector<std::string> header = {"image"};
    header.insert(header.end(), head.names.begin(), head.names.end());
    std::string csv = data::csv_row(header);
    std::ofstream jsonl(results_path, o->resume ? std::ios::app : std::ios::trunc);
    if (!jsonl) throw Error(results_path.string() + ": cannot write");
    Failures failed;
    std::vector<std::string> done;
    std::vector<std::vector<double>> probs;
    ProgressBar bar("classify", static_cast<int64_t>(todo.size()), "img");
    for (size_t start = 0; start < todo.size(); start += static_cast<size_t>(o->batch)) {
      const ImageBatch batch = read_images(todo, start, start + static_cast<size_t>(o->batch), failed, bar, o->dicom.read_options());
      const auto& names = batch.names;
      if (names.empty()) continue;
      // An ensemble's probability is the mean of its models'.
      torch::Tensor p;
      for (size_t k = 0; k < nets.size(); ++k) {
        const torch::Tensor pk =
            infer::class_probabilities(infer::global_embeddings(nets[k], batch.images), heads[k]).cpu().to(torch::kDouble);
        p = p.defined() ? p + pk : pk;
      }
      if (nets.size() > 1) p = (p / static_cast<double>(nets.size())).contiguous();
      for (size_t k = 0; k < names.size(); ++k) {
        std::vector<double> row(p[static_cast<int64_t>(k)].data_ptr<double>(),
                                p[static_cast<int64_t>(k)].data_ptr<double>() + p.size(1));
        nlohmann::ordered_json scores = nlohmann::ordered_json::object();
        nlohmann::ordered_json present = nlohmann::ordered_json::array();
        size_t best = 0;
        for (size_t c = 0; c < row.size(); ++c) {
          scores[head.names[c]] = row[c];
          if (row[c] > o->threshold) present.push_back(head.names[c]);
          if (row[c] > row[best]) best = c;
        }
        nlohmann::ordered_json rec{{"image", names[k]}, {"scores", scores}};
        if (bank.mode == infer::ClassifyMode::kBinary) rec["present"] = present;
        else rec["label"] = head.names[best];
        jsonl << rec.dump() << "\n";
        rows[names[k]] = std::move(row);
      }
      jsonl.flush();  // an interrupted run keeps every image written so far (--resume)
    }
    bar.finish();
    // scores.csv and the metrics in input order, whichever run classified an image.
    for (const auto& img : images) {
      const auto it = rows.find(img);
      if (it == rows.end()) continue;
      std::vector<std::string> cells = {img};
      for (double v : it->second) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.6f", v);
        cells.push_back(buf);
      }
      csv += data::csv_row(cells);
      done.push_back(img);
      probs.push_back(it->second);
    }
    for (const auto& [img, why] : failed) jsonl << nlohmann::ordered_json{{"image", img}, {"error", why}}.dump() << "\n";
    jsonl.close();
    write_file_atomic((fs::path(o->out) / "scores.csv").string(), csv);
    const size_t earlier = images.size() - todo.size();
    std::printf("classified %zu images x %zu classes (%s%s)%s -> %s/scores.csv, results.jsonl\n", done.size(), head.names.size(),
                infer::to_string(bank.mode).c_str(),
                nets.size() > 1 ? (", mean of " + std::to_string(nets.size()) + " models").c_str() : "",
                earlier > 0 ? (", " + std::to_string(earlier) + " of them by the earlier run").c_str() : "", o->out.c_str());

    if (lab && !done.empty()) {
      const auto y = align_labels(*lab, labels, done, head.names.size());
      const eval::ClassificationSummary s = eval::evaluate_classification(head.names, probs, y);
      const std::string table = eval::classification_table(s, bank.mode == infer::ClassifyMode::kMultiClass);
      nlohmann::ordered_json per = nlohmann::ordered_json::array();
      for (const auto& r : s.classes) per.push_back({{"class", r.name}, {"n_pos", r.n_pos}, {"n_neg", r.n_neg}, {"auroc", number_or_null(r.auroc)}});
      nlohmann::ordered_json metrics{{"labels", labels},
                                     {"mode", infer::to_string(bank.mode)},
                                     {"classes", per},
                                     {"macro_auroc", number_or_null(s.macro_auroc)},
                                     {"n_single_label", s.n_single_label},
                                     {"accuracy", number_or_null(s.accuracy)},
                                     {"balanced_accuracy", number_or_null(s.balanced_accuracy)}};
      write_file_atomic((fs::path(o->out) / "metrics.json").string(), metrics.dump(2) + "\n");
      write_file_atomic((fs::path(o->out) / "table.txt").string(), table);
      std::printf("%s", table.c_str());
    }
    report_failures(failed, images.size());
  });
}

}  // namespace afloc::cli
