// Model subcommands: `afloc config show`, `afloc demo` (encode images and reports with a small
// random model, print the embeddings' shapes and the loss, take optimizer steps).
#include <torch/torch.h>

#include <cmath>
#include <optional>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "afloc/common/error.h"
#include "afloc/common/log.h"
#include "afloc/model/afloc_model.h"
#include "afloc/text/clean.h"
#include "afloc/text/vocab_builder.h"
#include "commands.h"

namespace afloc::cli {
namespace {

struct ConfigShowOptions {
  std::string preset = "paper";
  std::string config;
};

struct DemoOptions {
  std::string preset = "tiny";
  int batch = 4;
  int steps = 3;
  uint64_t seed = 0;
  double lr = 1e-4;
  bool json = false;
};

// A few MIMIC-style reports (FINDINGS and IMPRESSION text, headers removed); the demo builds its
// vocabulary from them.
const char* const kDemoReports[] = {
    "The heart size is normal. The lungs are clear. No pleural effusion or "
    "pneumothorax. No acute cardiopulmonary process.",
    "Small right pleural effusion with blunting of the costophrenic angle. Heart size is "
    "normal. Small right pleural effusion.",
    "There is a moderate left apical pneumothorax. No focal consolidation. "
    "Moderate left apical pneumothorax.",
    "Patchy airspace opacity in the right lower lobe, likely pneumonia. The cardiac "
    "silhouette is enlarged. Right lower lobe consolidation. Mild cardiomegaly.",
    "A rounded nodule projects over the left mid lung. Bibasilar atelectasis. "
    "Left mid lung nodule.",
    "Bilateral perihilar hazy opacities consistent with mild pulmonary edema. "
    "Mild pulmonary edema. No pneumothorax.",
};

std::string shape(const torch::Tensor& t) {
  std::string s = "(";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + ")";
}

void run_demo(const DemoOptions& o, const GlobalOptions& g) {
  if (o.batch < 2) throw Error("--batch " + std::to_string(o.batch) + ": contrastive losses need >= 2");
  const torch::Device device(g.device);  // checked by apply_global
  torch::manual_seed(o.seed);
  std::mt19937_64 rng(o.seed);

  std::vector<std::vector<std::string>> sentences;
  std::vector<std::string> corpus;
  for (const char* r : kDemoReports) {
    sentences.push_back(text::clean_sentences(r));
    corpus.push_back(text::join_caption(sentences.back()));
  }
  text::VocabBuildOptions vopt;
  vopt.size = 400;
  vopt.min_frequency = 1;
  const text::Vocab vocab = text::build_wordpiece_vocab(corpus, vopt);

  model::AflocConfig cfg = model::preset(o.preset);
  cfg.bert.vocab_size = vocab.size();
  model::AflocModel net(cfg, vocab);
  net->to(device);
  int64_t n_params = 0;
  for (const auto& p : net->parameters()) n_params += p.numel();

  std::vector<std::string> captions;
  for (int i = 0; i < o.batch; ++i) {
    captions.push_back(text::sample_caption(sentences[static_cast<size_t>(i) % sentences.size()], rng));
  }
  // Smooth random images in [-1, 1] (no data needed for this smoke run).
  const torch::Tensor images =
      torch::tanh(torch::nn::functional::interpolate(
                      torch::randn({o.batch, 1, 8, 8}),
                      torch::nn::functional::InterpolateFuncOptions()
                          .size(std::vector<int64_t>{cfg.image_size, cfg.image_size})
                          .mode(torch::kBilinear)
                          .align_corners(false)))
          .repeat({1, 3, 1, 1})
          .to(device);
  const model::TokenBatch tokens = net->tokenize(captions, model::TextMode::kCaption).to(device);

  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(o.lr).betas({0.5, 0.999}));
  net->train();
  nlohmann::ordered_json steps = nlohmann::ordered_json::array();
  nlohmann::ordered_json shapes;
  for (int s = 0; s <= o.steps; ++s) {
    const model::ImageEmbeddings ie = net->encode_images(images);
    const model::TextEmbeddings te = net->encode_text(tokens);
    const loss::AlignmentLoss l = net->loss(ie, te);
    if (s == 0) {
      shapes["v_s (shallow regions)"] = shape(ie.shallow);
      shapes["v_d (deep regions)"] = shape(ie.deep);
      shapes["v_g (global)"] = shape(ie.global);
      shapes["t_w (words)"] = shape(te.words);
      shapes["t_s (sentences)"] = shape(te.sentences);
      shapes["t_r (report)"] = shape(te.report);
    }
    steps.push_back({{"step", s},
                     {"loss", l.total.item<double>()},
                     {"word", l.word.item<double>()},
                     {"sentence", l.sentence.item<double>()},
                     {"report", l.report.item<double>()}});
    if (!std::isfinite(l.total.item<double>())) throw Error("demo: loss is not finite at step " + std::to_string(s));
    if (s == o.steps) break;
    opt.zero_grad();
    l.total.backward();
    torch::nn::utils::clip_grad_norm_(net->parameters(), 0.25);
    opt.step();
  }

  if (o.json) {
    nlohmann::ordered_json out{{"preset", cfg.name}, {"parameters", n_params}, {"vocab_size", vocab.size()},
                               {"shapes", shapes}, {"steps", steps}};
    std::printf("%s\n", out.dump().c_str());
    return;
  }
  std::printf("afloc demo: preset '%s', %lld parameters, vocab %lld tokens, device %s\n",
              cfg.name.c_str(), static_cast<long long>(n_params), static_cast<long long>(vocab.size()),
              device.str().c_str());
  std::printf("  captions (training-style random sentence subsets):\n");
  for (const auto& c : captions) std::printf("    - %s\n", c.c_str());
  std::printf("  embeddings:\n");
  for (auto it = shapes.begin(); it != shapes.end(); ++it) {
    std::printf("    %-24s %s\n", it.key().c_str(), it.value().get<std::string>().c_str());
  }
  std::printf("  %-6s %10s %10s %10s %10s\n", "step", "loss", "word", "sentence", "report");
  for (const auto& s : steps) {
    std::printf("  %-6d %10.4f %10.4f %10.4f %10.4f\n", s["step"].get<int>(), s["loss"].get<double>(),
                s["word"].get<double>(), s["sentence"].get<double>(), s["report"].get<double>());
  }
}

}  // namespace

void check_device(const std::string& s) {
  std::optional<torch::Device> d;
  try {
    d.emplace(s);
  } catch (const c10::Error&) {
    throw Error("--device '" + s + "': expected cpu, cuda or cuda:N");
  }
  if (d->is_cpu()) return;
  if (!d->is_cuda()) throw Error("--device '" + s + "': expected cpu, cuda or cuda:N");
  if (!torch::cuda::is_available())
    throw Error("--device " + s + ": no CUDA device here (" +
                std::string(torch::cuda::device_count() == 0 && !at::hasCUDA() ? "this LibTorch is a CPU-only build"
                                                                               : "no GPU visible to this process") +
                "); use --device cpu");
  const auto n = static_cast<int64_t>(torch::cuda::device_count());
  if (d->has_index() && d->index() >= n)
    throw Error("--device " + s + ": this machine shows " + std::to_string(n) + " CUDA device(s), cuda:0 to cuda:" +
                std::to_string(n - 1));
}

void register_model_commands(CLI::App& app, GlobalOptions& g) {
  auto* config = app.add_subcommand("config", "Model configurations");
  config->require_subcommand(1);
  auto co = std::make_shared<ConfigShowOptions>();
  auto* show = config->add_subcommand("show", "Print a preset or a config file as full JSON");
  show->add_option("-p,--preset", co->preset, "Preset name: paper or tiny");
  show->add_option("-c,--config", co->config, "Config JSON file (overrides --preset)");
  show->callback([co, &g] {
    apply_global(g);
    const model::AflocConfig c = co->config.empty() ? model::preset(co->preset) : model::load_config(co->config);
    c.validate();
    std::cout << model::config_to_string(c) << "\n";
  });

  auto d = std::make_shared<DemoOptions>();
  auto* demo = app.add_subcommand(
      "demo", "Encode images and reports with a small random model; print shapes and the loss");
  demo->add_option("-p,--preset", d->preset, "Model preset");
  demo->add_option("-b,--batch", d->batch, "Image-report pairs in the batch");
  demo->add_option("-n,--steps", d->steps, "Optimizer steps on the fixed batch");
  demo->add_option("-s,--seed", d->seed, "Random seed");
  demo->add_option("--lr", d->lr, "Adam learning rate");
  demo->add_flag("--json", d->json, "Print one JSON object instead of the table");
  demo->callback([d, &g] {
    apply_global(g);
    run_demo(*d, g);
  });
}

}  // namespace afloc::cli
