#include "afloc/train/trainer.h"

#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "afloc/common/error.h"
#include "afloc/common/log.h"
#include "afloc/common/seed.h"
#include "afloc/common/progress.h"
#include "afloc/io/model_io.h"
#include "afloc/io/state_dict.h"
#include "afloc/io/tensor_file.h"
#include "afloc/text/clean.h"
#include "afloc/text/vocab_builder.h"
#include "afloc/train/autocast.h"
#include "afloc/train/distributed.h"
#include "afloc/train/curves.h"
#include "afloc/train/loader.h"

namespace fs = std::filesystem;

namespace afloc::train {
namespace {

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal = sig; }

double learning_rate(const OptimConfig& o, int64_t step, int64_t epoch, int64_t total_steps) {
  if (o.schedule == "step") {
    double lr = o.lr * std::pow(o.gamma, static_cast<double>(epoch));
    if (o.warmup_steps > 0 && step < o.warmup_steps) lr *= static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
    return lr;
  }
  if (o.warmup_steps > 0 && step < o.warmup_steps) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  const double span = std::max<double>(1.0, static_cast<double>(total_steps - o.warmup_steps));
  const double t = std::min(1.0, static_cast<double>(step - o.warmup_steps) / span);
  const double floor = o.lr * o.min_lr_ratio;
  return floor + (o.lr - floor) * 0.5 * (1.0 + std::cos(3.14159265358979323846 * t));
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) {
    if (auto* a = dynamic_cast<torch::optim::AdamOptions*>(&g.options())) a->lr(lr);
    if (auto* w = dynamic_cast<torch::optim::AdamWOptions*>(&g.options())) w->lr(lr);
  }
}

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

struct LoopState {
  int64_t step = 0;      // optimiser steps done
  int64_t epoch = 0;     // epoch in progress
  int64_t batch = 0;     // next batch of that epoch
  double elapsed = 0;    // seconds trained before this invocation
  double val_loss = std::nan("");
};

void append_line(const std::string& path, const nlohmann::ordered_json& j) {
  std::ofstream out(path, std::ios::app);
  if (!out) throw Error(path + ": cannot append");
  out << j.dump() << "\n";
}

// After a resume, lines logged after the checkpoint would be written again: drop them.
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      const auto j = nlohmann::json::parse(line);
      if (j.value("step", int64_t{0}) > step) continue;
    } catch (const std::exception&) {
      continue;  // a line cut by a crash
    }
    kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

void save_checkpoint(const std::string& run_dir, const std::string& name, model::AflocModel& net,
                     torch::optim::Optimizer& opt, const RunConfig& cfg, const text::Vocab& vocab, const LoopState& st,
                     int64_t keep) {
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  fs::create_directories(dir);
  const fs::path tmp = dir / (name + ".tmp"), final_dir = dir / name;
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  io::save_tensor_file((tmp / "model.pt").string(), io::state_dict(*net));
  torch::save(opt, (tmp / "optimizer.pt").string());
  write_file_atomic((tmp / "run.json").string(), run_config_to_string(cfg) + "\n");
  write_file_atomic((tmp / "model.json").string(), model::config_to_string(net->config()) + "\n");
  vocab.save((tmp / "vocab.txt").string());
  nlohmann::ordered_json s{{"step", st.step},  {"epoch", st.epoch}, {"batch", st.batch},
                           {"elapsed_seconds", st.elapsed}};
  if (!std::isnan(st.val_loss)) s["val_loss"] = st.val_loss;
  write_file_atomic((tmp / "state.json").string(), s.dump(2) + "\n");
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  write_file_atomic((dir / "latest.txt").string(), name + "\n");
  // Keep the newest `keep` step checkpoints; "final" and epoch ends are named differently.
  std::vector<std::string> steps;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step-", 0) == 0 && n.find(".tmp") == std::string::npos) steps.push_back(n);
  }
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; i + static_cast<size_t>(std::max<int64_t>(1, keep)) < steps.size(); ++i) {
    if (steps[i] != name) fs::remove_all(dir / steps[i]);
  }
}

std::vector<data::Sample> read_pairs(const RunConfig& c, const std::vector<std::string>& splits, data::SkipLog& skipped,
                                     bool progress) {
  data::PairList pl;
  if (c.data.format == "mimic") {
    data::MimicOptions mo;
    mo.root = c.data.root;
    mo.reports_root = c.data.reports;
    mo.splits = splits;
    mo.views = c.data.views;
    mo.last_paragraph = c.data.last_paragraph;
    mo.labels_csv = labels_csv(c);
    mo.progress = progress;
    pl = data::read_mimic(mo);
  } else {
    data::ManifestOptions mo;
    mo.path = c.data.manifest;
    mo.root = c.data.root;
    mo.splits = splits;
    mo.progress = progress;
    pl = data::read_manifest(mo);
  }
  skipped.merge(pl.skipped);
  return pl.samples;
}

// The batch's dropped pairs (loop.drop_same_labels): samples of equal label keys; undefined when off.
torch::Tensor batch_drop(const std::vector<int64_t>& keys, const Batch& b) {
  if (keys.empty()) return {};
  std::vector<int64_t> k;
  k.reserve(b.samples.size());
  for (const int64_t i : b.samples) k.push_back(keys[static_cast<size_t>(i)]);
  return torch::tensor(k, torch::kLong);
}

double validation_loss(model::AflocModel& net, BatchLoader& loader, const torch::Device& device, bool amp,
                       const std::vector<int64_t>& keys) {
  torch::NoGradGuard ng;
  net->eval();
  loader.start_epoch(0);
  double sum = 0;
  int64_t n = 0;
  Batch b;
  while (loader.next(b)) {
    AutocastGuard ag(amp, device);
    const auto ie = net->encode_images(b.images.to(device));
    const auto te = net->encode_text(b.tokens.to(device));
    const torch::Tensor k = batch_drop(keys, b);
    sum += net->loss(ie, te, k.defined() ? loss::same_key_pairs(k) : torch::Tensor()).total.item<double>();
    ++n;
  }
  net->train();
  return n ? sum / static_cast<double>(n) : std::nan("");
}

}  // namespace

TrainResult run_training(const RunConfig& config_in, const TrainOptions& opt) {
  const auto t_start = std::chrono::steady_clock::now();
  RunConfig cfg = config_in;
  validate(cfg);
  const DistEnv env = dist_env_from_environment();
  torch::Device device(opt.device);
  // One GPU per process: "cuda" means this process's LOCAL_RANK device.
  if (device.is_cuda() && !device.has_index() && env.enabled()) device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  Communicator comm(env, device);
  const bool main = comm.is_main();
  if (main) fs::create_directories(cfg.out);
  const std::string metrics_path = (fs::path(cfg.out) / "metrics.jsonl").string();

  // --- resume: the checkpoint's run config and vocab win ------------------------------------------
  LoopState st;
  std::string resume_dir;
  if (opt.resume) {
    resume_dir = io::latest_checkpoint(cfg.out);
    if (resume_dir.empty()) throw Error("--resume: no checkpoint in " + cfg.out + "/checkpoints");
    RunConfig saved = load_run_config((fs::path(resume_dir) / "run.json").string());
    // Loop length and loader settings may change on resume; everything else comes from the
    // checkpoint, except where things are now: the run directory being resumed (the saved one may be
    // relative to another working directory, or the run may have moved) and the data, when given.
    // What the command asks otherwise is not applied, and said so.
    const std::vector<std::string> ignored = resume_ignored_settings(cfg, saved);
    if (main && !ignored.empty()) {
      std::string list;
      for (const auto& d : ignored) list += "\n  " + d;
      log::warn("--resume continues " + cfg.out + " with its own settings; these differ in this command and are not applied:" +
                list + "\n(to train with them, start a new run with another --out, e.g. with --init " + cfg.out + ")");
    }
    apply_resume_settings(cfg, saved);
    cfg = saved;
    // The checkpoint's own model config (it differs from run.json's when the run started from --init).
    cfg.model = model::load_config((fs::path(resume_dir) / "model.json").string());
    const auto sj = nlohmann::json::parse(read_file((fs::path(resume_dir) / "state.json").string()));
    st.step = sj.at("step").get<int64_t>();
    st.epoch = sj.at("epoch").get<int64_t>();
    st.batch = sj.at("batch").get<int64_t>();
    st.elapsed = sj.value("elapsed_seconds", 0.0);
    if (sj.contains("val_loss")) st.val_loss = sj.at("val_loss").get<double>();
    if (main) truncate_metrics(metrics_path, st.step);
    if (main) log::info("resuming " + cfg.out + " from " + resume_dir + " (step " + std::to_string(st.step) + ", epoch " +
              std::to_string(st.epoch + 1) + ", batch " + std::to_string(st.batch) + ")");
  } else if (!io::latest_checkpoint(cfg.out).empty()) {
    throw Error(cfg.out + " already holds checkpoints: pass --resume to continue it, or choose another --out");
  } else if (main) {
    std::error_code ec;
    fs::remove(metrics_path, ec);
  }
  if (main) write_file_atomic((fs::path(cfg.out) / "run.json").string(), run_config_to_string(cfg) + "\n");
  // After the resume block: a resumed run keeps the autocast setting it was started with, as it keeps
  // the rest of its numerics, whatever the flags of the resuming command say.
  const bool amp_requested = device.is_cuda() ? cfg.loop.amp : cfg.loop.amp_cpu;
  const AutocastPlan amp_plan =
      plan_autocast(amp_requested, device.is_cuda(),
                    amp_requested && (device.is_cuda() ? cuda_has_fast_bfloat16(device) : cpu_has_fast_bfloat16()));
  const bool amp = amp_plan.on;
  if (main && !amp_plan.warning.empty()) log::warn(amp_plan.warning);
  if (main && amp) log::info(std::string("bfloat16 autocast on ") + (device.is_cuda() ? "CUDA" : "CPU"));

  // --- data ------------------------------------------------------------------------------------------
  TrainResult res;
  res.autocast = amp;
  data::SkipLog skipped;
  const PairData train_data = prepare_pairs(read_pairs(cfg, cfg.data.train_splits, skipped, opt.progress && main), skipped);
  data::SkipLog val_skipped;
  PairData val_data;
  if (cfg.loop.validate && !cfg.data.val_splits.empty()) {
    val_data = prepare_pairs(read_pairs(cfg, cfg.data.val_splits, val_skipped, opt.progress && main), val_skipped);
  }
  res.train_samples = static_cast<int64_t>(train_data.samples.size());
  res.val_samples = static_cast<int64_t>(val_data.samples.size());
  res.skipped = skipped.total() + val_skipped.total();
  if (main) {
    log::info("training pairs: " + std::to_string(res.train_samples) + " (" + skipped.summary() + "); validation pairs: " +
              std::to_string(res.val_samples) + " (" + val_skipped.summary() + ")");
    nlohmann::ordered_json dr{{"train", res.train_samples}, {"validate", res.val_samples},
                              {"skipped_train", skipped.counts}, {"skipped_validate", val_skipped.counts},
                              {"skip_examples", skipped.examples}};
    write_file_atomic((fs::path(cfg.out) / "data_report.json").string(), dr.dump(2) + "\n");
  }
  // Label keys for loop.drop_same_labels, and what they leave out of a batch on average.
  std::vector<int64_t> train_keys, val_keys;
  if (cfg.loop.drop_same_labels) {
    train_keys = data::label_keys(train_data.samples);
    val_keys = data::label_keys(val_data.samples);
    std::map<int64_t, int64_t> sets;
    int64_t labelled = 0;
    for (const int64_t k : train_keys) {
      if (k < 0) continue;
      ++labelled;
      ++sets[k];
    }
    if (labelled == 0) {
      throw Error(std::string("loop.drop_same_labels: no training pair has labels (") +
                  (cfg.data.format == "mimic" ? "none of its studies is in " + labels_csv(cfg)
                                              : "the manifest has no labels column; afloc prepare writes one from "
                                                "MIMIC's chexpert CSV") + ")");
    }
    // The batch an image is contrasted in: its rank's, or the global one when embeddings are gathered.
    const int64_t negatives = cfg.loop.batch_size * (cfg.loop.gather_embeddings ? comm.world() : 1) - 1;
    double same = 0;  // expected same-label partners of one image among them
    for (const auto& [k, n] : sets) same += static_cast<double>(n) * static_cast<double>(n);
    same = same / (static_cast<double>(res.train_samples) * static_cast<double>(res.train_samples)) *
           static_cast<double>(negatives);
    if (main) {
      char buf[256];
      std::snprintf(buf, sizeof buf,
                    "drop_same_labels: %lld of %lld training pairs labelled, %zu label sets; %.1f of an image's %lld "
                    "negatives per batch share its labels and are left out, on average",
                    static_cast<long long>(labelled), static_cast<long long>(res.train_samples), sets.size(), same,
                    static_cast<long long>(negatives));
      log::info(buf);
    }
  }
  if (res.train_samples < cfg.loop.batch_size * comm.world()) {
    throw Error("training set has " + std::to_string(res.train_samples) + " usable pairs, fewer than one batch of " +
                std::to_string(cfg.loop.batch_size) + " (" + skipped.summary() + ")");
  }

  // --- vocabulary and model ----------------------------------------------------------------------------
  text::Vocab vocab;
  io::TensorMap init_weights;
  if (resume_dir.empty() && !cfg.init.empty()) {
    io::LoadedModel init = io::load_model(cfg.init, torch::kCPU);
    cfg.model = init.config;
    vocab = init.vocab;
    init_weights = io::state_dict(*init.model);
    if (main) log::info("initial weights from " + init.source);
  } else if (!resume_dir.empty()) {
    vocab = text::Vocab::load((fs::path(resume_dir) / "vocab.txt").string());
  } else if (!cfg.vocab.path.empty()) {
    vocab = text::Vocab::load(cfg.vocab.path);
  } else {
    std::vector<std::string> corpus;
    corpus.reserve(train_data.sentences.size());
    for (const auto& s : train_data.sentences) corpus.push_back(text::join_caption(s));
    text::VocabBuildOptions vo;
    vo.size = cfg.vocab.size;
    vo.min_frequency = cfg.vocab.min_frequency;
    vo.lowercase = cfg.model.text.lowercase;
    vocab = text::build_wordpiece_vocab(corpus, vo);
    if (main) log::info("built a WordPiece vocabulary of " + std::to_string(vocab.size()) + " tokens from the training reports");
  }
  cfg.model.bert.vocab_size = vocab.size();
  torch::manual_seed(cfg.loop.seed);
  model::AflocModel net(cfg.model, vocab);
  if (!init_weights.empty()) io::load_state_dict(*net, init_weights, cfg.init);
  net->to(device);

  std::unique_ptr<torch::optim::Optimizer> optimizer;
  if (cfg.optim.name == "adam") {
    optimizer = std::make_unique<torch::optim::Adam>(
        net->parameters(), torch::optim::AdamOptions(cfg.optim.lr)
                               .betas({cfg.optim.beta1, cfg.optim.beta2})
                               .weight_decay(cfg.optim.weight_decay));
  } else {
    optimizer = std::make_unique<torch::optim::AdamW>(
        net->parameters(), torch::optim::AdamWOptions(cfg.optim.lr)
                               .betas({cfg.optim.beta1, cfg.optim.beta2})
                               .weight_decay(cfg.optim.weight_decay));
  }
  if (!resume_dir.empty()) {
    io::load_state_dict(*net, io::load_tensor_file((fs::path(resume_dir) / "model.pt").string()),
                        (fs::path(resume_dir) / "model.pt").string());
    torch::load(*optimizer, (fs::path(resume_dir) / "optimizer.pt").string(), device);
  }
  // Every rank starts from rank 0's weights (identical anyway with the same seed).
  comm.broadcast(net->parameters());
  comm.broadcast(net->buffers());

  LoaderOptions lo;
  lo.batch_size = cfg.loop.batch_size;
  lo.image_size = cfg.model.image_size;
  lo.workers = cfg.loop.workers;
  lo.prefetch = cfg.loop.prefetch;
  lo.seed = cfg.loop.seed;
  lo.cache_bytes = cfg.data.cache_mb << 20;
  lo.read.dicom_voi = data::parse_dicom_voi(cfg.data.dicom_voi);
  lo.rank = comm.rank();
  lo.world = comm.world();
  auto tokenize = [&net](const std::vector<std::string>& caps) { return net->tokenize(caps, model::TextMode::kCaption); };
  BatchLoader loader(train_data, lo, tokenize);
  std::unique_ptr<BatchLoader> val_loader;
  if (res.val_samples >= 2 && main) {
    LoaderOptions vo = lo;
    vo.rank = 0;
    vo.world = 1;
    vo.shuffle = false;
    vo.random_captions = false;
    vo.batch_size = std::min<int64_t>(cfg.loop.batch_size, res.val_samples);
    vo.workers = 1;
    val_loader = std::make_unique<BatchLoader>(val_data, vo, tokenize);
  } else if (cfg.loop.validate && main) {
    log::warn("validation skipped: fewer than 2 validation pairs");
  }

  const int64_t per_epoch = loader.batches_per_epoch();
  int64_t total = per_epoch * cfg.loop.epochs;
  if (cfg.loop.max_steps > 0) total = std::min(total, cfg.loop.max_steps);
  if (st.step >= total) {
    log::info("run already complete at step " + std::to_string(st.step));
  }

  g_signal = 0;
  auto old_int = std::signal(SIGINT, on_signal);
  auto old_term = std::signal(SIGTERM, on_signal);
  struct Restore {
    decltype(old_int) i, t;
    ~Restore() {
      std::signal(SIGINT, i);
      std::signal(SIGTERM, t);
    }
  } restore{old_int, old_term};

  // On a resume the bar counts the remaining steps, so rate and ETA are this session's.
  ProgressBar bar(st.step > 0 ? "train (resumed)" : "train", std::max<int64_t>(0, total - st.step), "step",
                  opt.progress && main);
  auto set_train_mode = [&] {
    net->train();
    if (cfg.loop.freeze_batchnorm) {
      for (auto& m : net->modules(/*include_self=*/false)) {
        if (m->as<torch::nn::BatchNorm2d>()) m->eval();
      }
    }
  };
  set_train_mode();
  const bool gather = cfg.loop.gather_embeddings && comm.world() > 1;
  double win_loss = 0, win_word = 0, win_sent = 0, win_rep = 0, win_region = 0, win_shallow = 0;
  int64_t win_n = 0;
  auto win_t0 = std::chrono::steady_clock::now();
  const double wait0 = loader.wait_seconds();
  int64_t samples_done = 0;
  const auto loop_t0 = std::chrono::steady_clock::now();
  double lr = cfg.optim.lr;

  auto checkpoint = [&](const std::string& name) {
    LoopState s = st;
    s.elapsed = st.elapsed + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    if (main) {
      save_checkpoint(cfg.out, name, net, *optimizer, cfg, vocab, s, cfg.loop.keep_checkpoints);
      // The curves so far, beside the metrics; a failure to draw them never stops training.
      try {
        plot_curves({read_curves(metrics_path, run_name(cfg.out))}, (fs::path(cfg.out) / "curves.png").string());
      } catch (const std::exception& e) {
        log::warn(std::string("curves.png not drawn: ") + e.what());
      }
    }
    comm.barrier();
    return (fs::path(cfg.out) / "checkpoints" / name).string();
  };

  bool done = st.step >= total;
  while (!done && st.epoch < cfg.loop.epochs) {
    loader.start_epoch(st.epoch, st.batch);
    Batch b;
    while (!done && loader.next(b)) {
      lr = learning_rate(cfg.optim, st.step, st.epoch, total);
      set_lr(*optimizer, lr);
      // Dropout draws from a generator seeded per step, so a resumed run repeats them exactly.
      torch::manual_seed(mix_seed(cfg.loop.seed, static_cast<uint64_t>(st.step)));
      optimizer->zero_grad();
      loss::AlignmentLoss l;
      {
        AutocastGuard ag(amp, device);
        auto ie = net->encode_images(b.images.to(device));
        auto te = net->encode_text(b.tokens.to(device));
        if (gather) {
          // Every rank computes the loss of the global batch; gradients reach only its own samples and
          // are summed below, which is the single-process gradient of the global batch.
          ie = comm.all_gather(ie);
          te = comm.all_gather(te);
        }
        torch::Tensor drop;
        if (torch::Tensor k = batch_drop(train_keys, b); k.defined()) {
          // Without gathering, each rank contrasts its own batch; with it, the global one.
          if (gather) k = comm.all_gather(k.to(device)).cpu();
          drop = loss::same_key_pairs(k);
        }
        l = net->loss(ie, te, drop);
      }
      double lv = l.total.item<double>();
      // One small collective per step: the mean loss, whether any rank saw a non-finite loss or a signal.
      torch::Tensor flags = torch::tensor({std::isfinite(lv) ? lv : 0.0, std::isfinite(lv) ? 0.0 : 1.0,
                                           g_signal != 0 ? 1.0 : 0.0},
                                          torch::TensorOptions().dtype(torch::kDouble).device(device));
      comm.allreduce_sum(flags);
      flags = flags.cpu();
      const bool any_nonfinite = flags[1].item<double>() > 0, any_signal = flags[2].item<double>() > 0;
      if (!any_nonfinite && comm.world() > 1) lv = gather ? lv : flags[0].item<double>() / comm.world();
      if (any_nonfinite) {
        std::string ids;
        for (size_t k = 0; k < b.samples.size() && k < 8; ++k) {
          ids += (k ? ", " : "") + train_data.samples[static_cast<size_t>(b.samples[k])].id;
        }
        if (main) {
          append_line(metrics_path, {{"step", st.step + 1}, {"epoch", st.epoch + 1}, {"event", "non-finite loss"},
                                     {"loss", std::to_string(lv)}, {"rank", comm.rank()}});
        }
        throw Error("non-finite loss (" + std::to_string(lv) + ") at step " + std::to_string(st.step + 1) + ", epoch " +
                    std::to_string(st.epoch + 1) + ", batch " + std::to_string(b.index) + " (samples " + ids +
                    (b.samples.size() > 8 ? ", ..." : "") + "); the last checkpoint is intact: fix the data or lower "
                    "optim.lr, then --resume");
      }
      l.total.backward();
      comm.allreduce_gradients(net->parameters(), /*average=*/!gather);
      if (cfg.optim.clip_norm > 0) torch::nn::utils::clip_grad_norm_(net->parameters(), cfg.optim.clip_norm);
      optimizer->step();
      // BatchNorm running statistics follow rank 0's, as DistributedDataParallel's broadcast_buffers.
      if (comm.world() > 1) comm.broadcast(net->buffers());
      ++st.step;
      ++st.batch;
      samples_done += static_cast<int64_t>(b.samples.size());
      win_loss += lv;
      win_word += l.word.defined() ? l.word.item<double>() : 0;
      win_sent += l.sentence.defined() ? l.sentence.item<double>() : 0;
      win_rep += l.report.defined() ? l.report.item<double>() : 0;
      win_region += l.region.defined() ? l.region.item<double>() : 0;
      win_shallow += l.shallow_sentence.defined() ? l.shallow_sentence.item<double>() : 0;
      ++win_n;
      char extra[64];
      std::snprintf(extra, sizeof extra, "loss %.3f lr %.1e", lv, lr);
      bar.update(1, extra);
      if (st.step % cfg.loop.log_every == 0 || st.step == total) {
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - win_t0).count();
        nlohmann::ordered_json j{{"step", st.step},
                                 {"epoch", st.epoch + 1},
                                 {"loss", win_loss / static_cast<double>(win_n)},
                                 {"word", win_word / static_cast<double>(win_n)},
                                 {"sentence", win_sent / static_cast<double>(win_n)},
                                 {"report", win_rep / static_cast<double>(win_n)},
                                 {"step_loss", lv},
                                 {"lr", lr},
                                 {"samples_per_s", dt > 0 ? static_cast<double>(win_n * cfg.loop.batch_size * comm.world()) / dt : 0.0}};
        if (cfg.model.loss.region_report_weight > 0) j["region"] = win_region / static_cast<double>(win_n);
        if (cfg.model.loss.shallow_sentence_weight > 0) j["shallow_sentence"] = win_shallow / static_cast<double>(win_n);
        if (main) append_line(metrics_path, j);
        res.last_loss = win_loss / static_cast<double>(win_n);
        win_loss = win_word = win_sent = win_rep = win_region = win_shallow = 0;
        win_n = 0;
        win_t0 = std::chrono::steady_clock::now();
      }
      if (opt.crash_after_step > 0 && st.step == opt.crash_after_step) std::_Exit(137);
      if (st.step >= total) done = true;
      const bool end_of_epoch = st.batch >= per_epoch;
      if (!done && !end_of_epoch && cfg.loop.checkpoint_every > 0 && st.step % cfg.loop.checkpoint_every == 0) {
        checkpoint(step_name(st.step));
      }
      if (any_signal) {
        if (end_of_epoch) {
          ++st.epoch;
          st.batch = 0;
        }
        const std::string ck = checkpoint(step_name(st.step));
        bar.finish();
        throw Error("interrupted by a signal at step " + std::to_string(st.step) +
                    "; checkpoint saved in " + ck + "; continue with --resume");
      }
    }
    if (st.batch >= per_epoch) {
      // End of epoch: validation, then the next epoch (the step schedule multiplies lr by gamma).
      if (val_loader) {
        st.val_loss = validation_loss(net, *val_loader, device, amp, val_keys);
        set_train_mode();
        append_line(metrics_path, {{"step", st.step}, {"epoch", st.epoch + 1}, {"val_loss", st.val_loss}});
        log::info("epoch " + std::to_string(st.epoch + 1) + ": validation loss " + std::to_string(st.val_loss));
      }
      ++st.epoch;
      st.batch = 0;
      if (!done) checkpoint(step_name(st.step));
    }
  }
  bar.finish();
  const double loop_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - loop_t0).count();
  res.final_checkpoint = checkpoint("final");
  res.steps = st.step;
  res.val_loss = st.val_loss;
  res.rank = comm.rank();
  res.world = comm.world();
  {
    torch::NoGradGuard ng;
    for (const auto& p : net->parameters()) {
      const torch::Tensor d = p.detach().to(torch::kCPU, torch::kDouble).reshape(-1);
      res.parameter_checksum += (d * (torch::arange(d.numel(), torch::kDouble) + 1)).sum().item<double>();
    }
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  res.samples_per_second = loop_s > 0 ? static_cast<double>(samples_done * comm.world()) / loop_s : 0;
  res.loader_wait_fraction = loop_s > 0 ? (loader.wait_seconds() - wait0) / loop_s : 0;
  if (loader.bad_images() > 0) log::warn(std::to_string(loader.bad_images()) + " unreadable images were replaced");
  return res;
}

}  // namespace afloc::train
