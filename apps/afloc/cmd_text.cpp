// Text subcommands: `afloc clean`, `afloc tokenize`, `afloc vocab build`.
#include <dirent.h>
#include <sys/stat.h>

#include <cmath>

#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>

#include "afloc/common/error.h"
#include "afloc/common/log.h"
#include "afloc/text/clean.h"
#include "afloc/text/tokenizer.h"
#include "afloc/text/vocab_builder.h"
#include "commands.h"

namespace afloc::cli {
namespace {

struct TokenizeOptions {
  std::string vocab;
  std::string mode = "prompt";
  int max_length = 97;
  bool lowercase = false;
  bool strip_accents = false;
  std::vector<std::string> texts;
};

struct VocabBuildCli {
  std::vector<std::string> corpus;
  std::string out = "vocab.txt";
  bool lines = false;
  bool raw = false;
  text::VocabBuildOptions opt;
};

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void list_txt(const std::string& dir, std::vector<std::string>& out) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) throw Error(dir + ": cannot open directory");
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    const std::string p = dir + "/" + n;
    if (is_dir(p)) {
      list_txt(p, out);
    } else if (n.size() > 4 && n.compare(n.size() - 4, 4, ".txt") == 0) {
      out.push_back(p);
    }
  }
}

// Documents of the corpus: each .txt file is one report, or with --lines each line is one.
std::vector<std::string> read_corpus(const VocabBuildCli& o) {
  std::vector<std::string> files;
  for (const auto& p : o.corpus) {
    if (is_dir(p)) {
      list_txt(p, files);
    } else {
      files.push_back(p);
    }
  }
  if (files.empty()) throw Error("vocab build: no corpus files found in the given paths");
  std::vector<std::string> docs;
  for (const auto& f : files) {
    const std::string data = read_file(f);
    if (!o.lines) {
      docs.push_back(data);
      continue;
    }
    size_t start = 0;
    while (start <= data.size()) {
      size_t end = data.find('\n', start);
      if (end == std::string::npos) end = data.size();
      if (end > start) docs.push_back(data.substr(start, end - start));
      start = end + 1;
    }
  }
  return docs;
}

}  // namespace

void register_text_commands(CLI::App& app, GlobalOptions& g) {
  // afloc clean
  auto clean_texts = std::make_shared<std::vector<std::string>>();
  auto* clean = app.add_subcommand("clean", "Clean texts as AFLoc does (SPEC §2); one JSON line each");
  clean->add_option("texts", *clean_texts, "Texts to clean")->required();
  clean->callback([clean_texts, &g] {
    apply_global(g);
    for (const auto& t : *clean_texts) {
      nlohmann::json j{{"raw", t}, {"sentences", text::clean_sentences(t)}, {"prompt", text::clean_prompt(t)}};
      std::cout << j.dump() << "\n";
    }
  });

  // afloc tokenize
  auto to = std::make_shared<TokenizeOptions>();
  auto* tok = app.add_subcommand("tokenize", "Tokenize texts with a WordPiece vocab; one JSON line each");
  tok->add_option("-v,--vocab", to->vocab, "vocab.txt (one token per line)")->required();
  tok->add_option("-m,--mode", to->mode, "prompt (clean first), caption or raw")
      ->check(CLI::IsMember({"prompt", "caption", "raw"}));
  tok->add_option("-n,--max-length", to->max_length, "Tokens incl. [CLS]/[SEP], padded");
  tok->add_flag("--lowercase", to->lowercase, "Lowercase in the normalizer");
  tok->add_flag("--strip-accents", to->strip_accents, "NFD + drop combining marks");
  tok->add_option("texts", to->texts, "Texts")->required();
  tok->callback([to, &g] {
    apply_global(g);
    text::TokenizerOptions topt;
    topt.max_length = to->max_length;
    topt.lowercase = to->lowercase;
    topt.strip_accents = to->strip_accents;
    const text::Tokenizer tokenizer(text::Vocab::load(to->vocab), topt);
    for (const auto& raw : to->texts) {
      const std::string prepared = to->mode == "prompt" ? text::clean_prompt(raw) : raw;
      const text::Encoding e = tokenizer.encode(prepared, /*pad=*/false);
      nlohmann::json j{{"raw", raw}, {"text", prepared}, {"tokens", e.tokens}, {"input_ids", e.input_ids}};
      std::cout << j.dump() << "\n";
    }
  });

  // afloc vocab build
  auto* vocab = app.add_subcommand("vocab", "WordPiece vocabularies");
  vocab->require_subcommand(1);
  auto vo = std::make_shared<VocabBuildCli>();
  auto* build = vocab->add_subcommand("build", "Train a WordPiece vocab on a report corpus");
  build->add_option("-c,--corpus", vo->corpus,
                    "Report files or directories (every .txt below; one report per file)")
      ->required();
  build->add_option("-s,--size", vo->opt.size, "Vocabulary size, special tokens included");
  build->add_option("--min-frequency", vo->opt.min_frequency, "Minimum pair count to merge");
  build->add_option("-o,--out", vo->out, "Output vocab.txt");
  build->add_flag("--lines", vo->lines, "Each line of a file is one report");
  build->add_flag("--raw", vo->raw, "Do not apply AFLoc's report cleaning first");
  build->callback([vo, &g] {
    apply_global(g);
    std::vector<std::string> docs = read_corpus(*vo);
    std::vector<std::string> texts;
    texts.reserve(docs.size());
    for (const auto& d : docs) {
      // The model sees cleaned sentences joined by ". " (training captions), so the vocab is
      // learned on exactly that text.
      texts.push_back(vo->raw ? d : text::join_caption(text::clean_sentences(d)));
    }
    const text::Vocab v = text::build_wordpiece_vocab(texts, vo->opt);
    v.save(vo->out);
    log::info("vocab: " + std::to_string(v.size()) + " tokens from " + std::to_string(docs.size()) +
              " reports -> " + vo->out);
    std::cout << nlohmann::json{{"vocab", vo->out}, {"size", v.size()}, {"reports", docs.size()}}.dump() << "\n";
  });
}

}  // namespace afloc::cli
