// `afloc import`: the authors' Lightning checkpoints, Hugging Face BERT directories, torchvision
// ResNets and afloc training checkpoints into an afloc model directory (config.json, vocab.txt,
// model.safetensors); `afloc inspect`: what a weights file holds.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "afloc/common/error.h"
#include "afloc/common/log.h"
#include "afloc/io/model_io.h"
#include "afloc/io/safetensors.h"
#include "afloc/io/torch_checkpoint.h"
#include "commands.h"

namespace afloc::cli {
namespace {

struct ImportCli {
  std::string lightning, hf_bert, torchvision, checkpoint, vocab, preset = "paper", model_config, out;
  bool allow_partial = false;
  uint64_t seed = 0;
};

std::string shape_of(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? "," : "") + std::to_string(t.size(i));
  return s + "]";
}

}  // namespace

void register_import_commands(CLI::App& app, GlobalOptions& g) {
  auto o = std::make_shared<ImportCli>();
  auto* c = app.add_subcommand(
      "import",
      "Convert weights into an afloc model directory (config.json, vocab.txt, model.safetensors):\n"
      "  --lightning Pretrained_CXR.ckpt --vocab vocab.txt   the authors' checkpoints (nothing foreign is unpickled)\n"
      "  --hf-bert DIR [--torchvision resnet50.pth]          initial weights for pretraining\n"
      "  --checkpoint RUN_OR_CHECKPOINT                       a model trained with afloc train");
  c->add_option("--lightning", o->lightning, "PyTorch Lightning checkpoint of the authors' code (.ckpt)");
  c->add_option("--hf-bert", o->hf_bert, "Hugging Face BERT directory (config.json, vocab.txt, weights)");
  c->add_option("--torchvision", o->torchvision, "torchvision ResNet state dict (.pth or .safetensors)");
  c->add_option("--checkpoint", o->checkpoint, "afloc training checkpoint or run directory");
  c->add_option("-v,--vocab", o->vocab, "vocab.txt (Bio_ClinicalBERT's = bert-base-cased) for --lightning");
  c->add_option("-p,--preset", o->preset, "Model preset the weights belong to");
  c->add_option("--model-config", o->model_config, "Model config JSON (overrides --preset)");
  c->add_option("-o,--out", o->out, "Output model directory")->required();
  c->add_flag("--allow-partial", o->allow_partial, "Keep going when tensors are missing or unexpected (reported)");
  c->add_option("-s,--seed", o->seed, "Seed for weights the sources do not provide (projections)");
  c->callback([o, &g] {
    apply_global(g);
    const int sources = !o->lightning.empty() + !o->checkpoint.empty() + (!o->hf_bert.empty() || !o->torchvision.empty());
    if (sources != 1) throw Error("import: give exactly one of --lightning, --checkpoint, or --hf-bert/--torchvision");
    if (!o->checkpoint.empty()) {
      auto m = io::load_model(o->checkpoint, torch::kCPU);
      io::save_model_dir(o->out, m.model, m.vocab, {{"source", o->checkpoint}});
      std::printf("imported %s -> %s\n", m.source.c_str(), o->out.c_str());
      return;
    }
    model::AflocConfig cfg = o->model_config.empty() ? model::preset(o->preset) : model::load_config(o->model_config);
    text::Vocab vocab;
    if (!o->hf_bert.empty()) {
      cfg.bert = io::read_hf_bert_config(o->hf_bert + "/config.json");
      vocab = text::Vocab::load(o->vocab.empty() ? o->hf_bert + "/vocab.txt" : o->vocab);
    } else {
      if (o->vocab.empty()) throw Error("import: --vocab is required (the BERT vocabulary; the authors use Bio_ClinicalBERT's vocab.txt)");
      vocab = text::Vocab::load(o->vocab);
    }
    cfg.bert.vocab_size = vocab.size();
    torch::manual_seed(o->seed);
    model::AflocModel net(cfg, vocab);
    std::map<std::string, std::string> meta;
    if (!o->lightning.empty()) {
      const auto r = io::import_lightning(net, o->lightning, o->allow_partial);
      std::printf("%s\n", r.summary().c_str());
      meta["source"] = o->lightning;
    } else {
      if (!o->hf_bert.empty()) {
        const auto r = io::import_hf_bert(net, o->hf_bert);
        std::printf("BERT from %s: %s\n", o->hf_bert.c_str(), r.summary().c_str());
        meta["text_source"] = o->hf_bert;
      }
      if (!o->torchvision.empty()) {
        const auto r = io::import_torchvision_resnet(net, o->torchvision);
        std::printf("ResNet from %s: %s\n", o->torchvision.c_str(), r.summary().c_str());
        meta["image_source"] = o->torchvision;
      }
    }
    io::save_model_dir(o->out, net, vocab, meta);
    std::printf("model directory: %s\n", o->out.c_str());
  });

  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* ins = app.add_subcommand("inspect", "List the tensors of a weights file (.pt/.ckpt/.bin zip or .safetensors), or of the "
                                            "weights in a model or checkpoint directory");
  ins->add_option("file", *path, "File (or model / checkpoint directory) to inspect")->required();
  ins->add_flag("--json", *json, "JSON output");
  ins->callback([path, json, &g] {
    apply_global(g);
    if (std::filesystem::is_directory(*path)) {
      const std::string found = io::weights_file_in(*path);
      if (found.empty()) {
        throw Error(*path + " is a directory without model.safetensors or model.pt: give a weights file, a model directory "
                            "(afloc import) or a checkpoint directory (RUN/checkpoints/NAME)");
      }
      *path = found;
    }
    io::TensorMap t;
    std::vector<std::string> foreign, top;
    if (path->size() > 12 && path->substr(path->size() - 12) == ".safetensors") {
      t = io::load_safetensors(*path).tensors;
    } else {
      auto c = io::read_torch_checkpoint(*path);
      t = std::move(c.tensors);
      foreign = c.foreign;
      top = c.top_level;
    }
    if (*json) {
      nlohmann::ordered_json j{{"file", *path}, {"top_level", top}, {"foreign", foreign}, {"tensors", nlohmann::ordered_json::object()}};
      for (const auto& [k, v] : t) j["tensors"][k] = {{"shape", v.sizes().vec()}, {"dtype", c10::toString(v.scalar_type())}};
      std::printf("%s\n", j.dump(1).c_str());
      return;
    }
    std::printf("%s: %zu tensors\n", path->c_str(), t.size());
    for (const auto& [k, v] : t) std::printf("  %-70s %-8s %s\n", k.c_str(), c10::toString(v.scalar_type()), shape_of(v).c_str());
    if (!foreign.empty()) {
      std::printf("foreign objects (not unpickled):");
      for (const auto& f : foreign) std::printf(" %s", f.c_str());
      std::printf("\n");
    }
  });
}

}  // namespace afloc::cli
