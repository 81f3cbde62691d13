// Unit tests of the model and losses: shapes and names, the aggregation on hand cases, the batched
// local loss against a per-caption reference twin, backward and one optimizer step, tensor IO.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>

#include "afloc/common/error.h"
#include "afloc/io/state_dict.h"
#include "afloc/io/tensor_file.h"
#include "afloc/loss/alignment.h"
#include "afloc/model/afloc_model.h"
#include "afloc/text/clean.h"
#include "afloc/text/vocab_builder.h"

namespace afloc {
namespace {

text::Vocab hand_vocab() {
  return text::Vocab({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "small", "eff", "##usion", ".",
                      "no", "p", "##ne", "##um", "heart", "ok", "with", "##out", "note"});
}

TEST(Aggregation, WordsSentencesAndLengthsOnAHandCase) {
  const text::Vocab v = hand_vocab();
  const model::TokenTable table(v);
  // [CLS] small eff ##usion . no p ##ne ##um . [SEP] [PAD]
  // words: [CLS] small effusion . no pneum . [SEP]  -> the "." before [SEP] joins sentence 2
  const torch::Tensor ids = torch::tensor({{2, 5, 6, 7, 8, 9, 10, 11, 12, 8, 3, 0}}, torch::kLong);
  const model::Aggregation agg = model::build_aggregation(ids, table);
  EXPECT_EQ(agg.n_words[0], 8);
  EXPECT_EQ(agg.word_lens[0].item<int64_t>(), 7);  // small effusion . no pneum . + 1
  EXPECT_EQ(agg.n_sentences[0], 2);
  EXPECT_EQ(agg.sent_lens[0].item<int64_t>(), 3);
  // Negation flags per sentence unit: [CLS], "small effusion", "no pneum", [SEP].
  EXPECT_FALSE(agg.sent_negated[0][0].item<bool>());
  EXPECT_FALSE(agg.sent_negated[0][1].item<bool>());
  EXPECT_TRUE(agg.sent_negated[0][2].item<bool>());
  EXPECT_FALSE(agg.sent_negated[0][3].item<bool>());

  const torch::Tensor hidden = torch::arange(12, torch::kFloat).view({1, 12, 1}) + 1;  // token t -> t+1
  const model::TextEmbeddings e = model::aggregate(hidden, agg);
  const auto w = e.words.squeeze();  // (T)
  EXPECT_FLOAT_EQ(w[0].item<float>(), 1);       // [CLS]
  EXPECT_FLOAT_EQ(w[2].item<float>(), 3 + 4);   // eff + ##usion
  EXPECT_FLOAT_EQ(w[5].item<float>(), 7 + 8 + 9);  // p ##ne ##um
  EXPECT_FLOAT_EQ(w[7].item<float>(), 11);      // [SEP]
  EXPECT_FLOAT_EQ(w[8].item<float>(), 0);       // padding
  const auto s = e.sentences.squeeze();
  EXPECT_FLOAT_EQ(s[0].item<float>(), 1);
  EXPECT_FLOAT_EQ(s[1].item<float>(), (2 + 7) / 2.0f);         // small effusion
  EXPECT_FLOAT_EQ(s[2].item<float>(), (6 + 24 + 10) / 3.0f);   // no pneum "." (renamed "*")
  EXPECT_FLOAT_EQ(s[3].item<float>(), 11);                      // [SEP]
  EXPECT_FLOAT_EQ(e.report.item<float>(), (1 + 2 + 3 + 4 + 5 + 6 + 7 + 8 + 9 + 10 + 11) / 12.0f);
}

TEST(Aggregation, EmptyTextGivesANaNSentenceButFiniteGradients) {
  const model::TokenTable table(hand_vocab());
  const torch::Tensor ids = torch::tensor({{2, 3, 0, 0}, {2, 13, 14, 3}}, torch::kLong);
  const model::Aggregation agg = model::build_aggregation(ids, table);
  const torch::Tensor hidden = torch::randn({2, 4, 3}, torch::requires_grad());
  const model::TextEmbeddings e = model::aggregate(hidden, agg);
  EXPECT_TRUE(e.sentences[0].select(1, 1).isnan().all().item<bool>());
  EXPECT_FALSE(e.sentences[1].isnan().any().item<bool>());
  e.sentences[1].sum().backward();
  EXPECT_TRUE(hidden.grad().isfinite().all().item<bool>());
}

TEST(Aggregation, NegationCuesAreWholeWordsRebuiltFromPieces) {
  const model::TokenTable table(hand_vocab());
  // [CLS] heart ok with ##out eff ##usion . note small . [SEP]: "without" is two pieces; "note"
  // starts like "no" but is another word.
  const torch::Tensor ids = torch::tensor({{2, 13, 14, 15, 16, 6, 7, 8, 17, 5, 8, 3}}, torch::kLong);
  const model::Aggregation agg = model::build_aggregation(ids, table);
  ASSERT_EQ(agg.n_sentences[0], 2);
  EXPECT_TRUE(agg.sent_negated[0][1].item<bool>());
  EXPECT_FALSE(agg.sent_negated[0][2].item<bool>());
}

TEST(Aggregation, RejectsIdsWithoutSepOrOutOfRange) {
  const model::TokenTable table(hand_vocab());
  EXPECT_THROW(model::build_aggregation(torch::tensor({{2, 5, 6}}, torch::kLong), table), Error);
  EXPECT_THROW(model::build_aggregation(torch::tensor({{2, 99, 3}}, torch::kLong), table), Error);
}

TEST(Loss, BatchedLocalLossEqualsThePerCaptionLoop) {
  torch::manual_seed(3);
  const int64_t b = 5;
  const torch::Tensor img = torch::randn({b, 16, 3, 4});
  torch::Tensor units = torch::randn({b, 16, 9});
  const std::vector<int64_t> lens = {9, 2, 5, 1, 7};
  units[1].narrow(1, 3, 6).fill_(std::nan(""));  // garbage past a caption's length is never read
  const auto [l0, l1] = loss::local_loss_reference(img, units, lens);
  for (int64_t block : {int64_t{0}, int64_t{1}, int64_t{700}}) {
    loss::LocalLossOptions o;
    o.max_block_elements = block;
    const auto r = loss::local_loss(img, units, torch::tensor(lens), o);
    EXPECT_NEAR(r.loss0.item<double>(), l0.item<double>(), 1e-5) << "block " << block;
    EXPECT_NEAR(r.loss1.item<double>(), l1.item<double>(), 1e-5) << "block " << block;
  }
}

// Skipped units (loss.skip_negated) count as if the caption never held them.
TEST(Loss, SkippedUnitsEqualCaptionsWithoutThem) {
  torch::manual_seed(5);
  const int64_t b = 4, d = 8, t = 6;
  const torch::Tensor img = torch::randn({b, d, 3, 3});
  const torch::Tensor units = torch::randn({b, d, t});
  const std::vector<int64_t> lens = {6, 4, 3, 5};
  torch::Tensor skip = torch::zeros({b, t}, torch::kBool);
  skip[0][2] = true;
  skip[0][4] = true;
  skip[3][1] = true;
  skip[2][5] = true;  // past caption 2's length: no effect
  torch::Tensor compact = torch::zeros({b, d, t});
  std::vector<int64_t> compact_lens;
  for (int64_t k = 0; k < b; ++k) {
    int64_t n = 0;
    for (int64_t i = 0; i < lens[static_cast<size_t>(k)]; ++i)
      if (!skip[k][i].item<bool>()) compact[k].select(1, n++).copy_(units[k].select(1, i));
    compact_lens.push_back(n);
  }
  const auto a = loss::local_loss(img, units, torch::tensor(lens), {}, skip);
  const auto c = loss::local_loss(img, compact, torch::tensor(compact_lens));
  EXPECT_NEAR(a.loss0.item<double>(), c.loss0.item<double>(), 1e-5);
  EXPECT_NEAR(a.loss1.item<double>(), c.loss1.item<double>(), 1e-5);
  const auto plain = loss::local_loss(img, units, torch::tensor(lens));
  EXPECT_GT(std::abs(a.loss0.item<double>() - plain.loss0.item<double>()), 1e-4);
  // Through the config switch.
  const torch::Tensor s = torch::randn({b, d, 4, 4}), g = torch::randn({b, d}), r = torch::randn({b, d});
  model::LossConfig cfg;
  cfg.use_word = false;
  cfg.use_report = false;
  cfg.skip_negated = true;
  const auto on = loss::alignment_loss(s, img, g, units, torch::tensor(lens), units, torch::tensor(lens), r, cfg,
                                       int64_t{1} << 25, skip);
  EXPECT_NEAR(on.sentence.item<double>(), (c.loss0 + c.loss1).item<double>(), 1e-5);
}

TEST(Loss, TermsSwitchOffForAblations) {
  torch::manual_seed(4);
  const torch::Tensor s = torch::randn({3, 8, 4, 4}), d = torch::randn({3, 8, 2, 2}), g = torch::randn({3, 8});
  const torch::Tensor w = torch::randn({3, 8, 6}), se = torch::randn({3, 8, 4}), r = torch::randn({3, 8});
  const torch::Tensor wl = torch::tensor({6, 3, 2}), sl = torch::tensor({4, 2, 2});
  model::LossConfig all;
  const auto full = loss::alignment_loss(s, d, g, w, wl, se, sl, r, all);
  EXPECT_NEAR(full.total.item<double>(),
              (full.word + full.sentence + full.report).item<double>(), 1e-5);
  model::LossConfig only_sent;
  only_sent.use_word = false;
  only_sent.use_report = false;
  const auto part = loss::alignment_loss(s, d, g, w, wl, se, sl, r, only_sent);
  EXPECT_FALSE(part.word.defined());
  EXPECT_FALSE(part.report.defined());
  EXPECT_NEAR(part.total.item<double>(), full.sentence.item<double>(), 1e-6);
}

TEST(Loss, SentenceShallowTermIsTheSentenceLossOnTheShallowMap) {
  // With the same sentences and negation flags, the term is the deep sentence–region loss computed
  // on v_s instead, weighted; off (undefined, not in the total) by default.
  torch::manual_seed(5);
  const torch::Tensor s = torch::randn({3, 8, 4, 4}), d = torch::randn({3, 8, 2, 2}), g = torch::randn({3, 8});
  const torch::Tensor w = torch::randn({3, 8, 6}), se = torch::randn({3, 8, 4}), r = torch::randn({3, 8});
  const torch::Tensor wl = torch::tensor({6, 3, 2}), sl = torch::tensor({4, 2, 2});
  const torch::Tensor neg = torch::tensor({false, false, true, false, false, false, false, false, false, true, false, false})
                                .reshape({3, 4});
  model::LossConfig c;
  c.use_word = false;
  c.skip_negated = true;
  const auto off = loss::alignment_loss(s, d, g, w, wl, se, sl, r, c, int64_t{1} << 25, neg);
  EXPECT_FALSE(off.shallow_sentence.defined());
  c.shallow_sentence_weight = 0.25;
  const auto on = loss::alignment_loss(s, d, g, w, wl, se, sl, r, c, int64_t{1} << 25, neg);
  const auto ref = loss::local_loss(s, se, sl, {}, neg);
  EXPECT_NEAR(on.shallow_sentence.item<double>(), 0.25 * (ref.loss0 + ref.loss1).item<double>(), 1e-5);
  EXPECT_NEAR(on.total.item<double>(), off.total.item<double>() + on.shallow_sentence.item<double>(), 1e-5);
  // The negation flags reach it: without them the term differs.
  const auto plain = loss::local_loss(s, se, sl);
  EXPECT_GT(std::abs((plain.loss0 + plain.loss1).item<double>() - (ref.loss0 + ref.loss1).item<double>()), 1e-4);
  // No shallow map: an error, not a silent zero.
  EXPECT_THROW(loss::alignment_loss(torch::Tensor(), d, g, w, wl, se, sl, r, c, int64_t{1} << 25, neg), c10::Error);
}

// The region-report term against a plain loop: for image b and caption k, a smooth maximum over
// b's regions of their cosine with k's report vector; cross-entropy both ways as the global term.
TEST(Loss, RegionReportTermEqualsThePlainLoopAndIsOffByDefault) {
  torch::manual_seed(5);
  const int64_t b = 3, dim = 8, h = 2, w = 3;
  const torch::Tensor deep = torch::randn({b, dim, h, w}), rep = torch::randn({b, dim});
  const double gamma = 7.0, temp3 = 10.0;
  const auto got = loss::region_report_loss(deep, rep, gamma, temp3);
  std::vector<double> scores(static_cast<size_t>(b * b));
  for (int64_t i = 0; i < b; ++i)
    for (int64_t k = 0; k < b; ++k) {
      double acc = 0;
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          const torch::Tensor v = deep[i].select(1, y).select(1, x);
          const double c = (v.dot(rep[k]) / (v.norm() * rep[k].norm())).item<double>();
          acc += std::exp(gamma * c);
        }
      scores[static_cast<size_t>(i * b + k)] = std::log(acc / static_cast<double>(h * w)) / gamma * temp3;
      EXPECT_NEAR(got.scores[i][k].item<double>(), scores[static_cast<size_t>(i * b + k)], 1e-4);
    }
  double l0 = 0, l1 = 0;
  for (int64_t i = 0; i < b; ++i) {
    double row = 0, col = 0;
    for (int64_t k = 0; k < b; ++k) {
      row += std::exp(scores[static_cast<size_t>(i * b + k)]);
      col += std::exp(scores[static_cast<size_t>(k * b + i)]);
    }
    l0 += std::log(row) - scores[static_cast<size_t>(i * b + i)];
    l1 += std::log(col) - scores[static_cast<size_t>(i * b + i)];
  }
  EXPECT_NEAR(got.loss0.item<double>(), l0 / b, 1e-4);
  EXPECT_NEAR(got.loss1.item<double>(), l1 / b, 1e-4);
  // A large gamma pools like the maximum region.
  const auto sharp = loss::region_report_loss(deep, rep, 1e4, 1.0);
  const torch::Tensor cos_max =
      torch::einsum("bdn,kd->bkn", {deep.flatten(2) / deep.flatten(2).norm(2, 1, true), rep / rep.norm(2, 1, true)}).amax(2);
  EXPECT_LT((sharp.scores - cos_max).abs().max().item<double>(), 1e-3);

  const torch::Tensor s = torch::randn({b, dim, 4, 4}), g = torch::randn({b, dim});
  const torch::Tensor wd = torch::randn({b, dim, 6}), se = torch::randn({b, dim, 4});
  const torch::Tensor wl = torch::tensor({6, 3, 2}), sl = torch::tensor({4, 2, 2});
  model::LossConfig c;
  EXPECT_FALSE(loss::alignment_loss(s, deep, g, wd, wl, se, sl, rep, c).region.defined());
  const double without = loss::alignment_loss(s, deep, g, wd, wl, se, sl, rep, c).total.item<double>();
  c.region_report_weight = 0.5;
  c.region_report_gamma = gamma;
  const auto with = loss::alignment_loss(s, deep, g, wd, wl, se, sl, rep, c);
  EXPECT_NEAR(with.region.item<double>(), 0.5 * (l0 + l1) / b, 1e-4);
  EXPECT_NEAR(with.total.item<double>(), without + with.region.item<double>(), 1e-4);
}

// Dropped pairs (false negatives: captions that say the same as an image's own) leave both
// softmaxes of every contrastive term: each row's and column's cross-entropy is taken over the kept
// entries only, from the same scores.
TEST(Loss, DroppedPairsLeaveBothSoftmaxesOfEveryTerm) {
  torch::manual_seed(6);
  const int64_t b = 4, dim = 8;
  const torch::Tensor s = torch::randn({b, dim, 4, 4}), d = torch::randn({b, dim, 2, 2}), g = torch::randn({b, dim});
  const torch::Tensor w = torch::randn({b, dim, 6}), se = torch::randn({b, dim, 4}), r = torch::randn({b, dim});
  const torch::Tensor wl = torch::tensor({6, 3, 2, 5}), sl = torch::tensor({4, 2, 2, 3});
  // Images 0, 1 and 3 say the same; 2 differs.
  const torch::Tensor key = torch::tensor({7, 7, 9, 7});
  const torch::Tensor drop = loss::same_key_pairs(key);
  EXPECT_EQ(drop.sum().item<int64_t>(), 6);  // the three pairs among 0, 1 and 3, both ways; never the diagonal
  EXPECT_FALSE(drop[2].any().item<bool>());
  // Reference: the two cross-entropies of a score matrix over the kept entries.
  const auto kept_ce = [&](const torch::Tensor& scores) {
    double l0 = 0, l1 = 0;
    for (int64_t i = 0; i < b; ++i) {
      double row = 0, col = 0;
      for (int64_t k = 0; k < b; ++k) {
        if (drop[i][k].item<bool>()) continue;
        row += std::exp(scores[i][k].item<double>());
        col += std::exp(scores[k][i].item<double>());
      }
      l0 += std::log(row) - scores[i][i].item<double>();
      l1 += std::log(col) - scores[i][i].item<double>();
    }
    return std::make_pair(l0 / b, l1 / b);
  };
  const auto gl = loss::global_loss(g, r, 10.0, drop);
  const auto [g0, g1] = kept_ce(loss::global_loss(g, r).scores);
  EXPECT_NEAR(gl.loss0.item<double>(), g0, 1e-5);
  EXPECT_NEAR(gl.loss1.item<double>(), g1, 1e-5);
  const auto ll = loss::local_loss(d, se, sl, {}, {}, drop);
  const auto [s0, s1] = kept_ce(loss::local_loss(d, se, sl).similarities);
  EXPECT_NEAR(ll.loss0.item<double>(), s0, 1e-5);
  EXPECT_NEAR(ll.loss1.item<double>(), s1, 1e-5);
  const auto rr = loss::region_report_loss(d, r, 10.0, 10.0, drop);
  const auto [r0, r1] = kept_ce(loss::region_report_loss(d, r, 10.0, 10.0).scores);
  EXPECT_NEAR(rr.loss0.item<double>(), r0, 1e-5);
  EXPECT_NEAR(rr.loss1.item<double>(), r1, 1e-5);
  // Dropping lowers the loss (fewer negatives), and an all-false mask changes nothing.
  EXPECT_LT(gl.loss0.item<double>(), loss::global_loss(g, r).loss0.item<double>());
  EXPECT_NEAR(loss::global_loss(g, r, 10.0, torch::zeros({b, b}, torch::kBool)).loss0.item<double>(),
              loss::global_loss(g, r).loss0.item<double>(), 1e-6);
  // Every term of the total takes the mask.
  model::LossConfig c;
  c.region_report_weight = 1.0;
  c.shallow_sentence_weight = 1.0;
  const auto all = loss::alignment_loss(s, d, g, w, wl, se, sl, r, c, int64_t{1} << 25, {}, drop);
  const auto wo = loss::local_loss(s, w, wl, {}, {}, drop);
  const auto ss = loss::local_loss(s, se, sl, {}, {}, drop);
  EXPECT_NEAR(all.report.item<double>(), (gl.loss0 + gl.loss1).item<double>(), 1e-5);
  EXPECT_NEAR(all.sentence.item<double>(), (ll.loss0 + ll.loss1).item<double>(), 1e-5);
  EXPECT_NEAR(all.region.item<double>(), (rr.loss0 + rr.loss1).item<double>(), 1e-5);
  EXPECT_NEAR(all.word.item<double>(), (wo.loss0 + wo.loss1).item<double>(), 1e-5);
  EXPECT_NEAR(all.shallow_sentence.item<double>(), (ss.loss0 + ss.loss1).item<double>(), 1e-5);
  // The matched pair itself can never be dropped, nor can a mask of the wrong shape be used.
  EXPECT_THROW(loss::global_loss(g, r, 10.0, torch::eye(b, torch::kBool)), c10::Error);
  EXPECT_THROW(loss::global_loss(g, r, 10.0, torch::zeros({b, b + 1}, torch::kBool)), c10::Error);
}

struct TinySetup {
  text::Vocab vocab;
  model::AflocConfig cfg;
};

TinySetup tiny_setup() {
  const std::vector<std::string> reports = {
      "small left pleural effusion. heart size is normal", "no pneumothorax. lungs are clear",
      "moderate right pneumothorax. no effusion", "mild pulmonary edema. enlarged heart"};
  text::VocabBuildOptions vo;
  vo.size = 200;
  vo.min_frequency = 1;
  TinySetup t{text::build_wordpiece_vocab(reports, vo), model::preset("tiny")};
  t.cfg.bert.vocab_size = t.vocab.size();
  t.cfg.bert.hidden_dropout = 0.0;
  t.cfg.bert.attention_dropout = 0.0;
  t.cfg.image_size = 64;
  t.cfg.upsample_size = 96;
  return t;
}

namespace F = torch::nn::functional;

TEST(Model, ShiftedResizeIsTheResizeReadHalfAStrideFurther) {
  // shift 0: exactly the align_corners bilinear resize the paper model uses.
  const torch::Tensor img = torch::rand({2, 3, 40, 40}) * 2 - 1;
  const torch::Tensor plain = F::interpolate(img, F::InterpolateFuncOptions().size(std::vector<int64_t>{64, 64}).mode(torch::kBilinear).align_corners(true));
  EXPECT_LT((model::resize_shifted(img, 64, 0.0) - plain).abs().max().item<double>(), 1e-5);
  // A horizontal ramp (value = input column): output column p reads input column
  // (p + shift) * 39 / 63, clamped at the right edge; rows are shifted the same way.
  const torch::Tensor ramp = torch::arange(40, torch::kFloat).expand({1, 1, 40, 40}).contiguous();
  const torch::Tensor out = model::resize_shifted(ramp, 64, 7.5);
  for (const int64_t p : {0, 10, 50}) EXPECT_NEAR(out[0][0][5][p].item<double>(), (p + 7.5) * 39.0 / 63.0, 1e-4);
  EXPECT_NEAR(out[0][0][5][63].item<double>(), 39.0, 1e-4);
  const torch::Tensor col = model::resize_shifted(ramp.transpose(2, 3).contiguous(), 64, 7.5);
  EXPECT_NEAR(col[0][0][10][5].item<double>(), 17.5 * 39.0 / 63.0, 1e-4);
}

TEST(Model, ShapesFollowTheConfig) {
  const TinySetup t = tiny_setup();
  model::AflocModel net(t.cfg, t.vocab);
  net->eval();
  torch::NoGradGuard g;
  const auto ie = net->encode_images(torch::rand({2, 3, 64, 64}) * 2 - 1);
  const int64_t d = t.cfg.embed_dim();
  EXPECT_EQ(ie.deep.sizes(), (std::vector<int64_t>{2, d, t.cfg.deep_side(), t.cfg.deep_side()}));
  EXPECT_EQ(ie.shallow.sizes(), (std::vector<int64_t>{2, d, t.cfg.shallow_side(), t.cfg.shallow_side()}));
  EXPECT_EQ(ie.global.sizes(), (std::vector<int64_t>{2, d}));
  // The other deep stage and ResNet-10 (one block per stage): v_d from layer3 is half the side of
  // v_s; from layer2 it is the same side and reads the same trunk output.
  for (const int64_t layer : {2, 3}) {
    model::AflocConfig c = t.cfg;
    c.resnet.depth = 10;
    c.deep_layer = layer;
    model::AflocModel n10(c, t.vocab);
    n10->eval();
    const auto params = n10->named_parameters();
    EXPECT_TRUE(params.contains("img_encoder.model.layer3.0.conv1.weight"));
    EXPECT_FALSE(params.contains("img_encoder.model.layer3.1.conv1.weight"));
    const auto e = n10->encode_images(torch::rand({1, 3, 64, 64}) * 2 - 1);
    EXPECT_EQ(e.deep.size(2), layer == 2 ? e.shallow.size(2) : (e.shallow.size(2) + 1) / 2);
    EXPECT_EQ(e.deep.size(2), c.deep_side());
    EXPECT_EQ(c.deep_side(), c.upsample_size / c.deep_stride());
  }
  const auto tb = net->tokenize({"Small left pleural effusion.", "No pneumothorax."});
  EXPECT_EQ(tb.texts[0], "small left pleural effusion");
  const auto te = net->encode_text(tb);
  EXPECT_EQ(te.words.sizes(), (std::vector<int64_t>{2, d, 97}));
  EXPECT_EQ(te.report.sizes(), (std::vector<int64_t>{2, d}));
  EXPECT_EQ(te.word_lens[0].item<int64_t>(), 5);  // 4 words + [CLS]
}

TEST(Model, ResNetStateDictUsesTorchvisionNames) {
  model::ResNetConfig c;
  c.depth = 50;
  model::ResNet r(c);
  const auto sd = io::state_dict(*r);
  EXPECT_EQ(sd.size(), 318u + 2u - 2u);  // torchvision resnet50 has 320 entries, fc.weight/bias removed
  EXPECT_TRUE(sd.count("layer1.0.downsample.0.weight"));
  EXPECT_TRUE(sd.count("layer4.2.bn3.num_batches_tracked"));
  EXPECT_EQ(sd.at("layer3.5.conv2.weight").sizes(), (std::vector<int64_t>{256, 256, 3, 3}));
  c.depth = 18;
  model::ResNet r18(c);
  const auto sd18 = io::state_dict(*r18);
  EXPECT_TRUE(sd18.count("layer2.0.downsample.1.running_var"));
  EXPECT_FALSE(sd18.count("layer1.0.downsample.0.weight"));
  EXPECT_FALSE(sd18.count("layer1.0.conv3.weight"));
}

TEST(Model, BackwardIsFiniteAndOneStepLowersTheLoss) {
  torch::manual_seed(0);
  const TinySetup t = tiny_setup();
  model::AflocModel net(t.cfg, t.vocab);
  net->train();
  const torch::Tensor images = torch::rand({4, 3, 64, 64}) * 2 - 1;
  const auto tokens = net->tokenize({"small left pleural effusion. heart size is normal", "no pneumothorax. lungs are clear",
                                     "moderate right pneumothorax. no effusion", "mild pulmonary edema. enlarged heart"},
                                    model::TextMode::kCaption);
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-4).betas({0.5, 0.999}).weight_decay(1e-6));
  auto compute = [&] { return net->loss(net->encode_images(images), net->encode_text(tokens)).total; };
  const torch::Tensor l0 = compute();
  ASSERT_TRUE(std::isfinite(l0.item<double>()));
  opt.zero_grad();
  l0.backward();
  int64_t with_grad = 0;
  for (const auto& p : net->named_parameters()) {
    if (!p.value().grad().defined()) continue;
    ++with_grad;
    ASSERT_TRUE(p.value().grad().isfinite().all().item<bool>()) << p.key();
  }
  // Every parameter but the unused pooler and the type embeddings' second row gets a gradient.
  EXPECT_GT(with_grad, static_cast<int64_t>(net->parameters().size()) - 3);
  opt.step();
  const torch::Tensor l1 = compute();
  EXPECT_LT(l1.item<double>(), l0.item<double>()) << "before " << l0.item<double>() << " after " << l1.item<double>();
}

TEST(Model, RejectsAVocabOfTheWrongSize) {
  TinySetup t = tiny_setup();
  t.cfg.bert.vocab_size += 1;
  EXPECT_THROW(model::AflocModel(t.cfg, t.vocab), Error);
}

TEST(TensorIO, SaveLoadRoundTripAndStateDictReport) {
  const TinySetup t = tiny_setup();
  model::AflocModel a(t.cfg, t.vocab), b(t.cfg, t.vocab);
  const std::string path = ::testing::TempDir() + "/afloc_sd.pt";
  io::save_tensor_file(path, io::state_dict(*a));
  const io::TensorMap loaded = io::load_tensor_file(path);
  const io::LoadReport rep = io::load_state_dict(*b, loaded, path);
  EXPECT_TRUE(rep.complete()) << rep.summary();
  for (const auto& [k, v] : io::state_dict(*b)) EXPECT_TRUE(torch::equal(v, io::state_dict(*a).at(k))) << k;

  io::TensorMap broken = loaded;
  broken.erase("img_encoder.global_embedder.bias");
  broken["img_encoder.local_embedder.weight"] = torch::zeros({3, 3});
  broken["extra.tensor"] = torch::zeros({1});
  const io::LoadReport r2 = io::load_state_dict(*b, broken, "x.pt", "", /*strict=*/false);
  EXPECT_EQ(r2.missing, std::vector<std::string>{"img_encoder.global_embedder.bias"});
  EXPECT_EQ(r2.unexpected, std::vector<std::string>{"extra.tensor"});
  ASSERT_EQ(r2.mismatched.size(), 1u);
  EXPECT_NE(r2.mismatched[0].find("img_encoder.local_embedder.weight"), std::string::npos);
  EXPECT_THROW(io::load_state_dict(*b, broken, "x.pt"), Error);
  EXPECT_THROW(io::load_tensor_file("/nonexistent.pt"), Error);
  const std::string junk = ::testing::TempDir() + "/afloc_junk.pt";
  std::ofstream(junk) << "not a zip";
  EXPECT_THROW(io::load_tensor_file(junk), Error);
}

TEST(Model, BadImageShapeIsATensorError) {
  const TinySetup t = tiny_setup();
  model::AflocModel net(t.cfg, t.vocab);
  EXPECT_THROW(net->encode_images(torch::rand({2, 1, 64, 64})), c10::Error);
}

}  // namespace
}  // namespace afloc
