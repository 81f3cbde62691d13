// Golden: image encoder, text aggregation, losses and the checkpoint key layout vs tensors written
// by the authors' own functions (shared/golden). Every case file of each kind is run.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "afloc/common/error.h"
#include "afloc/io/state_dict.h"
#include "afloc/io/tensor_file.h"
#include "afloc/loss/alignment.h"
#include "afloc/model/afloc_model.h"
#include "afloc/model/image_encoder.h"
#include "afloc/model/text_encoder.h"
#include "afloc/text/tokenizer.h"
#include "golden.h"
#include "tensor_compare.h"

namespace afloc::test {
std::string bert_vocab_path();

namespace {

nlohmann::json read_json(const std::string& path) {
  return nlohmann::json::parse(read_file(path));
}

std::string sibling_json(const std::string& pt) { return pt.substr(0, pt.size() - 3) + ".json"; }

std::string basename(const std::string& p) {
  const auto i = p.find_last_of('/');
  return i == std::string::npos ? p : p.substr(i + 1);
}

TEST(GoldenModel, ImageEncoderMatchesTheAuthors) {
  auto files = golden_files("image_encoder_case", ".pt");
  AFLOC_REQUIRE_CASES(files, "image_encoder_case*.pt");
  torch::NoGradGuard no_grad;
  for (const auto& file : files) {
    SCOPED_TRACE(file);
    std::string weights = golden_dir() + "/image_encoder_weights.pt";
    const std::string js = sibling_json(file);
    if (std::ifstream(js).good()) {
      const auto j = read_json(js);
      if (j.contains("weights_file")) weights = golden_dir() + "/" + basename(j["weights_file"].get<std::string>());
    }
    const io::TensorMap w = io::load_tensor_file(weights);
    const io::TensorMap c = io::load_tensor_file(file);
    model::AflocConfig cfg = model::preset("paper");
    model::ImageEncoder enc(cfg);
    const io::LoadReport rep = io::load_state_dict(*enc, w, weights, "afloc.img_encoder.");
    EXPECT_TRUE(rep.complete()) << rep.summary();
    enc->eval();
    const torch::Tensor input = io::require(c, "input", file);
    if (c.count("upsampled_299_row1")) {
      namespace F = torch::nn::functional;
      const torch::Tensor up = F::interpolate(
          input.narrow(0, 1, 1), F::InterpolateFuncOptions()
                                     .size(std::vector<int64_t>{299, 299})
                                     .mode(torch::kBilinear)
                                     .align_corners(true));
      expect_close(basename(file) + " upsampled_299_row1", up, c.at("upsampled_299_row1"), 1e-6);
    }
    const model::ImageEmbeddings e = enc(input);
    expect_close(basename(file) + " img_feat_g", e.global_feat, io::require(c, "img_feat_g", file), 1e-4);
    expect_close(basename(file) + " img_emb_l2 (shallow)", e.shallow, io::require(c, "img_emb_l2", file), 1e-4);
    expect_close(basename(file) + " img_emb_l (deep)", e.deep, io::require(c, "img_emb_l", file), 1e-4);
    expect_close(basename(file) + " img_emb_g (global)", e.global, io::require(c, "img_emb_g", file), 1e-4);
  }
}

TEST(GoldenModel, TextAggregationMatchesTheAuthors) {
  auto files = golden_files("text_aggregation_case", ".pt");
  AFLOC_REQUIRE_CASES(files, "text_aggregation_case*.pt");
  const text::Vocab vocab = text::Vocab::load(bert_vocab_path());
  const model::TokenTable table(vocab);
  const text::Tokenizer tokenizer(vocab);
  for (const auto& file : files) {
    SCOPED_TRACE(file);
    const io::TensorMap c = io::load_tensor_file(file);
    const torch::Tensor ids = io::require(c, "input_ids", file);
    const std::string js = sibling_json(file);
    if (std::ifstream(js).good()) {
      // The texts are already cleaned; our tokenizer must give the same ids.
      const auto j = read_json(js);
      const auto texts = j.at("texts").get<std::vector<std::string>>();
      for (size_t i = 0; i < texts.size(); ++i) {
        const text::Encoding e = tokenizer.encode(texts[i]);
        EXPECT_TRUE(torch::equal(torch::tensor(e.input_ids), ids[static_cast<int64_t>(i)])) << texts[i];
        EXPECT_TRUE(torch::equal(torch::tensor(e.attention_mask),
                                 io::require(c, "attention_mask", file)[static_cast<int64_t>(i)]));
      }
    }
    const torch::Tensor hidden = io::require(c, "hidden_last4", file);  // (4, B, T, D)
    const model::Aggregation agg = model::build_aggregation(ids, table);
    const model::TextEmbeddings e = model::aggregate(hidden.sum(0), agg);
    expect_close(basename(file) + " word_embeddings", e.words, io::require(c, "word_embeddings", file), 1e-4);
    expect_close(basename(file) + " sent_embeddings", e.sentences, io::require(c, "sent_embeddings", file), 1e-4);
    expect_close(basename(file) + " report_embeddings", e.report, io::require(c, "report_embeddings", file), 1e-5);
    EXPECT_TRUE(torch::equal(e.word_lens, io::require(c, "cap_lens_words", file)))
        << e.word_lens << " vs " << c.at("cap_lens_words");
    EXPECT_TRUE(torch::equal(e.sent_lens, io::require(c, "cap_lens_sents", file)))
        << e.sent_lens << " vs " << c.at("cap_lens_sents");
  }
}

TEST(GoldenModel, LossesAndGradientsMatchTheAuthors) {
  auto files = golden_files("losses_case", ".pt");
  AFLOC_REQUIRE_CASES(files, "losses_case*.pt");
  for (const auto& file : files) {
    SCOPED_TRACE(file);
    const std::string name = basename(file);
    const io::TensorMap c = io::load_tensor_file(file);
    model::LossConfig cfg;
    const std::string js = sibling_json(file);
    if (std::ifstream(js).good()) {
      const auto j = read_json(js);
      cfg.temp1 = j["temps"]["temp1"];
      cfg.temp2 = j["temps"]["temp2"];
      cfg.temp3 = j["temps"]["temp3"];
      cfg.report_weight = j["loss_weights"]["global_report"];
      cfg.sentence_weight = j["loss_weights"]["local_sent"];
      cfg.word_weight = j["loss_weights"]["local_word"];
    }
    auto input = [&](const char* k) {
      return io::require(c, std::string("inputs.") + k, file).clone().set_requires_grad(true);
    };
    torch::Tensor l2 = input("img_emb_l2"), l = input("img_emb_l"), g = input("img_emb_g");
    torch::Tensor tw = input("text_emb_w"), ts = input("text_emb_s"), tr = input("text_emb_r");
    const torch::Tensor lw = io::require(c, "cap_lens_words", file);
    const torch::Tensor ls = io::require(c, "cap_lens_sents", file);

    // Small blocks force the chunked path: results must not depend on chunking.
    const loss::AlignmentLoss total = loss::alignment_loss(l2, l, g, tw, lw, ts, ls, tr, cfg, 64);
    expect_close(name + " calc_loss.loss", total.total, c.at("calc_loss.loss"), 1e-4);
    expect_close(name + " calc_loss.global_report_loss", total.report, c.at("calc_loss.global_report_loss"), 1e-4);
    expect_close(name + " calc_loss.local_sent_loss", total.sentence, c.at("calc_loss.local_sent_loss"), 1e-4);
    expect_close(name + " calc_loss.local_word_loss", total.word, c.at("calc_loss.local_word_loss"), 1e-4);

    const loss::GlobalLossResult gl = loss::global_loss(g, tr, cfg.temp3);
    expect_close(name + " global.loss0", gl.loss0, c.at("global.loss0"), 1e-4);
    expect_close(name + " global.loss1", gl.loss1, c.at("global.loss1"), 1e-4);
    expect_close(name + " global.scores0", gl.scores, c.at("global.scores0"), 1e-4);

    loss::LocalLossOptions lo;
    lo.temp1 = cfg.temp1;
    lo.temp2 = cfg.temp2;
    lo.temp3 = cfg.temp3;
    lo.return_attention = true;
    struct Level {
      const char* key;
      torch::Tensor regions, units, lens;
    };
    for (const Level& lv : {Level{"local_sent", l, ts, ls}, Level{"local_word", l2, tw, lw}}) {
      const std::string k = lv.key;
      const loss::LocalLossResult r = loss::local_loss(lv.regions, lv.units, lv.lens, lo);
      expect_close(name + " " + k + ".loss0", r.loss0, c.at(k + ".loss0"), 1e-4);
      expect_close(name + " " + k + ".loss1", r.loss1, c.at(k + ".loss1"), 1e-4);
      expect_close(name + " " + k + ".similarities", r.similarities, c.at(k + ".similarities"), 1e-4);
      expect_close(name + " " + k + ".similarities_T", r.similarities.t(), c.at(k + ".similarities_T"), 1e-4);
      for (size_t i = 0; i < r.attention.size(); ++i) {
        const std::string key = k + ".att_maps." + std::to_string(i);
        if (c.count(key)) expect_close(name + " " + key, r.attention[i], c.at(key), 1e-5);
      }
    }

    total.total.backward();
    const std::pair<const char*, torch::Tensor*> grads[] = {
        {"img_emb_l2", &l2}, {"img_emb_l", &l}, {"img_emb_g", &g},
        {"text_emb_w", &tw}, {"text_emb_s", &ts}, {"text_emb_r", &tr}};
    for (const auto& [k, t] : grads) {
      const std::string key = std::string("grad_of_loss.") + k;
      if (c.count(key)) expect_close(name + " " + key, t->grad(), c.at(key), 2e-5);
    }
  }
}

TEST(GoldenModel, PaperModelHasTheCheckpointKeysAndShapes) {
  const std::string path = golden_dir() + "/afloc_state_dict_keys.json";
  std::vector<std::string> files;
  if (std::ifstream(path).good()) files.push_back(path);
  AFLOC_REQUIRE_CASES(files, "afloc_state_dict_keys.json");
  const auto j = read_json(path);
  const text::Vocab vocab = text::Vocab::load(bert_vocab_path());
  model::AflocModel net(model::preset("paper"), vocab);
  const io::TensorMap ours = io::state_dict(*net);
  std::set<std::string> expected;
  int mismatched = 0;
  for (const auto& row : j.at("keys")) {
    std::string key = row.at(0);
    ASSERT_EQ(key.rfind("afloc.", 0), 0u) << key;
    key = key.substr(6);
    expected.insert(key);
    const auto shape = row.at(1).get<std::vector<int64_t>>();
    auto it = ours.find(key);
    if (it == ours.end()) {
      ADD_FAILURE() << "model lacks checkpoint key " << key;
      continue;
    }
    if (it->second.sizes() != c10::IntArrayRef(shape)) {
      ++mismatched;
      ADD_FAILURE() << key << ": model " << it->second.sizes() << " vs checkpoint " << row.at(1).dump();
    }
    const std::string dtype = row.at(2);
    const bool is_int = dtype.find("int64") != std::string::npos;
    EXPECT_EQ(it->second.scalar_type() == torch::kLong, is_int) << key << " dtype " << dtype;
  }
  for (const auto& [k, t] : ours) EXPECT_TRUE(expected.count(k)) << "extra model key " << k;
  std::printf("[golden] afloc_state_dict_keys: %zu checkpoint keys, model has %zu, %d shape mismatches\n",
              expected.size(), ours.size(), mismatched);
}

}  // namespace
}  // namespace afloc::test
