#include "afloc/train/run_config.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "afloc/common/error.h"
#include "afloc/data/datasets.h"
#include "afloc/data/dicom.h"

namespace afloc::train {
namespace {

using json = nlohmann::ordered_json;

// Reads the keys of an object into fields; Error for unknown keys or wrong types.
class Reader {
 public:
  Reader(const nlohmann::json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j_.is_object()) throw Error(path_ + ": expected an object");
  }
  template <typename T>
  void get(const char* key, T& out) {
    seen_.insert(key);
    if (!j_.contains(key)) return;
    try {
      out = j_.at(key).get<T>();
    } catch (const std::exception&) {
      throw Error(path_ + "." + key + ": wrong type (" + j_.at(key).dump() + ")");
    }
  }
  const nlohmann::json* child(const char* key) {
    seen_.insert(key);
    return j_.contains(key) ? &j_.at(key) : nullptr;
  }
  void finish() const {
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      if (!seen_.count(it.key())) throw Error(path_ + "." + it.key() + ": unknown key");
    }
  }

 private:
  const nlohmann::json& j_;
  std::string path_;
  std::set<std::string> seen_;
};

}  // namespace

RunConfig parse_run_config(const std::string& text, const std::string& origin) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(origin + ": invalid JSON: " + e.what());
  }
  RunConfig c;
  with_context(origin, [&] {
    Reader r(j, "run");
    if (const auto* m = r.child("model")) c.model = model::parse_config(m->dump(), "run.model");
    if (const auto* d = r.child("data")) {
      Reader x(*d, "run.data");
      x.get("format", c.data.format);
      x.get("root", c.data.root);
      x.get("reports", c.data.reports);
      x.get("manifest", c.data.manifest);
      x.get("train_splits", c.data.train_splits);
      x.get("val_splits", c.data.val_splits);
      x.get("views", c.data.views);
      x.get("last_paragraph", c.data.last_paragraph);
      x.get("dicom_voi", c.data.dicom_voi);
      x.get("cache_mb", c.data.cache_mb);
      x.get("labels", c.data.labels);
      x.finish();
    }
    if (const auto* v = r.child("vocab")) {
      Reader x(*v, "run.vocab");
      x.get("path", c.vocab.path);
      x.get("size", c.vocab.size);
      x.get("min_frequency", c.vocab.min_frequency);
      x.finish();
    }
    if (const auto* o = r.child("optim")) {
      Reader x(*o, "run.optim");
      x.get("name", c.optim.name);
      x.get("lr", c.optim.lr);
      x.get("beta1", c.optim.beta1);
      x.get("beta2", c.optim.beta2);
      x.get("weight_decay", c.optim.weight_decay);
      x.get("schedule", c.optim.schedule);
      x.get("gamma", c.optim.gamma);
      x.get("warmup_steps", c.optim.warmup_steps);
      x.get("min_lr_ratio", c.optim.min_lr_ratio);
      x.get("clip_norm", c.optim.clip_norm);
      x.finish();
    }
    if (const auto* l = r.child("loop")) {
      Reader x(*l, "run.loop");
      x.get("epochs", c.loop.epochs);
      x.get("batch_size", c.loop.batch_size);
      x.get("max_steps", c.loop.max_steps);
      x.get("seed", c.loop.seed);
      x.get("workers", c.loop.workers);
      x.get("prefetch", c.loop.prefetch);
      x.get("log_every", c.loop.log_every);
      x.get("checkpoint_every", c.loop.checkpoint_every);
      x.get("keep_checkpoints", c.loop.keep_checkpoints);
      x.get("validate", c.loop.validate);
      x.get("amp", c.loop.amp);
      x.get("amp_cpu", c.loop.amp_cpu);
      x.get("gather_embeddings", c.loop.gather_embeddings);
      x.get("freeze_batchnorm", c.loop.freeze_batchnorm);
      x.get("drop_same_labels", c.loop.drop_same_labels);
      x.finish();
    }
    r.get("out", c.out);
    r.get("init", c.init);
    r.finish();
    return 0;
  });
  validate(c);
  return c;
}

RunConfig load_run_config(const std::string& path) { return parse_run_config(read_file(path), path); }

namespace {

// The run config as JSON (run_config_to_string's text, and what a resume compares).
json run_config_json(const RunConfig& c) {
  nlohmann::json model_j;
  model::to_json(model_j, c.model);
  json j{{"model", model_j},
         {"data",
          {{"format", c.data.format},
           {"root", c.data.root},
           {"reports", c.data.reports},
           {"manifest", c.data.manifest},
           {"train_splits", c.data.train_splits},
           {"val_splits", c.data.val_splits},
           {"views", c.data.views},
           {"last_paragraph", c.data.last_paragraph},
           {"dicom_voi", c.data.dicom_voi},
           {"cache_mb", c.data.cache_mb},
           {"labels", c.data.labels}}},
         {"vocab", {{"path", c.vocab.path}, {"size", c.vocab.size}, {"min_frequency", c.vocab.min_frequency}}},
         {"optim",
          {{"name", c.optim.name},
           {"lr", c.optim.lr},
           {"beta1", c.optim.beta1},
           {"beta2", c.optim.beta2},
           {"weight_decay", c.optim.weight_decay},
           {"schedule", c.optim.schedule},
           {"gamma", c.optim.gamma},
           {"warmup_steps", c.optim.warmup_steps},
           {"min_lr_ratio", c.optim.min_lr_ratio},
           {"clip_norm", c.optim.clip_norm}}},
         {"loop",
          {{"epochs", c.loop.epochs},
           {"batch_size", c.loop.batch_size},
           {"max_steps", c.loop.max_steps},
           {"seed", c.loop.seed},
           {"workers", c.loop.workers},
           {"prefetch", c.loop.prefetch},
           {"log_every", c.loop.log_every},
           {"checkpoint_every", c.loop.checkpoint_every},
           {"keep_checkpoints", c.loop.keep_checkpoints},
           {"validate", c.loop.validate},
           {"amp", c.loop.amp},
           {"amp_cpu", c.loop.amp_cpu},
           {"gather_embeddings", c.loop.gather_embeddings},
           {"freeze_batchnorm", c.loop.freeze_batchnorm},
           {"drop_same_labels", c.loop.drop_same_labels}}},
         {"out", c.out},
         {"init", c.init}};
  return j;
}

}  // namespace

std::string run_config_to_string(const RunConfig& c) { return run_config_json(c).dump(2); }

void apply_resume_settings(const RunConfig& asked, RunConfig& saved) {
  saved.out = asked.out;
  if (asked.data.format == "manifest" && !asked.data.manifest.empty() && saved.data.format == "mimic") {
    // The same pairs prepared offline (afloc prepare), or other data the user chose to go on with.
    saved.data.format = "manifest";
    saved.data.root = asked.data.root;
    saved.data.reports.clear();
    saved.data.labels.clear();  // a manifest carries its own labels column
  }
  if (!asked.data.root.empty()) saved.data.root = asked.data.root;
  if (!asked.data.reports.empty()) saved.data.reports = asked.data.reports;
  if (!asked.data.manifest.empty()) saved.data.manifest = asked.data.manifest;
  if (!asked.data.labels.empty()) saved.data.labels = asked.data.labels;
  saved.data.cache_mb = asked.data.cache_mb;
  saved.loop.epochs = asked.loop.epochs;
  saved.loop.max_steps = asked.loop.max_steps;
  saved.loop.workers = asked.loop.workers;
  saved.loop.prefetch = asked.loop.prefetch;
  // What is logged, saved and kept: none of it changes the trajectory.
  saved.loop.log_every = asked.loop.log_every;
  saved.loop.checkpoint_every = asked.loop.checkpoint_every;
  saved.loop.keep_checkpoints = asked.loop.keep_checkpoints;
  saved.loop.validate = asked.loop.validate;
}

std::vector<std::string> resume_ignored_settings(const RunConfig& asked, const RunConfig& saved) {
  RunConfig kept = saved;
  apply_resume_settings(asked, kept);
  const json a = run_config_json(asked), k = run_config_json(kept);
  std::vector<std::string> out;
  // Leaves compared; arrays as a whole.
  auto walk = [&](auto&& self, const json& x, const json& y, const std::string& key) -> void {
    if (key == "model.bert.vocab_size" || (key == "model" && !asked.init.empty())) return;
    if (x.is_object() && y.is_object()) {
      for (const auto& [name, value] : x.items()) {
        if (y.contains(name)) self(self, value, y.at(name), key.empty() ? name : key + "." + name);
      }
      return;
    }
    // Numbers compare by value (2 and 2.0 are the same setting).
    if (x.is_number() && y.is_number() ? x.get<double>() != y.get<double>() : x != y) {
      out.push_back(key + ": " + x.dump() + " given, " + y.dump() + " kept");
    }
  };
  walk(walk, a, k, "");
  return out;
}

void validate(const RunConfig& c) {
  c.model.validate();
  auto bad = [](const std::string& field, const std::string& value, const std::string& want) {
    throw Error("run." + field + " = " + value + ": " + want);
  };
  if (c.data.format != "mimic" && c.data.format != "manifest") bad("data.format", c.data.format, "expected mimic or manifest");
  const auto& voi = data::dicom_voi_names();
  if (std::find(voi.begin(), voi.end(), c.data.dicom_voi) == voi.end())
    bad("data.dicom_voi", c.data.dicom_voi, "expected auto, minmax or authors");
  if (c.data.format == "manifest" && !c.data.labels.empty())
    bad("data.labels", c.data.labels, "applies to MIMIC-CXR-JPG; a manifest gives labels in its own labels column");
  if (c.optim.name != "adam" && c.optim.name != "adamw") bad("optim.name", c.optim.name, "expected adam or adamw");
  if (c.optim.schedule != "step" && c.optim.schedule != "cosine") bad("optim.schedule", c.optim.schedule, "expected step or cosine");
  if (!(c.optim.lr > 0)) bad("optim.lr", std::to_string(c.optim.lr), "must be > 0");
  if (c.optim.beta1 < 0 || c.optim.beta1 >= 1 || c.optim.beta2 < 0 || c.optim.beta2 >= 1) bad("optim.beta1/beta2", std::to_string(c.optim.beta1) + "/" + std::to_string(c.optim.beta2), "must be in [0, 1)");
  if (c.optim.gamma <= 0 || c.optim.gamma > 1) bad("optim.gamma", std::to_string(c.optim.gamma), "must be in (0, 1]");
  if (c.optim.clip_norm < 0) bad("optim.clip_norm", std::to_string(c.optim.clip_norm), "must be >= 0");
  if (c.loop.batch_size < 2) bad("loop.batch_size", std::to_string(c.loop.batch_size), "contrastive losses need >= 2");
  if (c.loop.epochs < 1) bad("loop.epochs", std::to_string(c.loop.epochs), "must be >= 1");
  if (c.loop.workers < 1) bad("loop.workers", std::to_string(c.loop.workers), "must be >= 1");
  if (c.loop.prefetch < 1) bad("loop.prefetch", std::to_string(c.loop.prefetch), "must be >= 1");
  if (c.loop.log_every < 1) bad("loop.log_every", std::to_string(c.loop.log_every), "must be >= 1");
  if (c.vocab.path.empty() && c.vocab.size < 10) bad("vocab.size", std::to_string(c.vocab.size), "must be >= 10");
  if (c.out.empty()) bad("out", "\"\"", "a run directory is required");
}

std::string labels_csv(const RunConfig& c) {
  if (c.data.format != "mimic") return "";
  if (!c.data.labels.empty()) return c.data.labels;
  if (!c.loop.drop_same_labels) return "";
  const std::string found = data::mimic_csv_path(c.data.root, "mimic-cxr-2.0.0-chexpert");
  if (found.empty())
    throw Error("loop.drop_same_labels: no mimic-cxr-2.0.0-chexpert.csv(.gz) under " + c.data.root +
                "; name a study_id-keyed label CSV with data.labels");
  return found;
}

}  // namespace afloc::train
