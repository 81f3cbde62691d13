// Inference library: the prompt encoder and its disk cache, the class head, presence gating.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "afloc/common/error.h"
#include "afloc/eval/localization_eval.h"
#include "afloc/infer/classifier.h"
#include "afloc/infer/localizer.h"
#include "afloc/infer/prompt_encoder.h"
#include "afloc/model/image_encoder.h"
#include "afloc/text/vocab_builder.h"
#include "tensor_compare.h"

namespace fs = std::filesystem;

namespace afloc::test {
namespace {

model::AflocModel tiny_model(uint64_t seed, int64_t image_size = 0) {
  static const text::Vocab vocab =
      text::build_wordpiece_vocab({"findings suggesting small left pleural effusion pneumothorax no heart size is normal"}, {});
  torch::manual_seed(seed);
  model::AflocConfig c = model::preset("tiny");
  c.bert.vocab_size = vocab.size();
  if (image_size > 0) {  // another input size, read without the resize inside the model
    c.image_size = image_size;
    c.upsample_size = 0;
  }
  model::AflocModel net(c, vocab);
  net->eval();
  return net;
}

std::string tmp_dir(const std::string& name) {
  const fs::path p = fs::path(::testing::TempDir()) / ("afloc_infer_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  return p.string();
}

TEST(PromptEncoder, BatchedEqualsOneByOneAndTheDiskCacheServesTheSameVectors) {
  auto net = tiny_model(1);
  const std::vector<std::string> prompts = {"Findings suggesting pleural effusion.", "No pneumothorax.",
                                            "Findings suggesting pleural effusion.", "Heart size is normal."};
  const std::string dir = tmp_dir("cache");
  infer::PromptEncoder a(net, dir);
  const torch::Tensor batched = a.encode(prompts);
  ASSERT_EQ(batched.sizes(), (torch::IntArrayRef{4, net->config().embed_dim()}));
  EXPECT_EQ(a.computed(), 3);  // the repeated prompt is encoded once
  infer::PromptEncoder alone(net);
  for (size_t i = 0; i < prompts.size(); ++i)
    expect_close("prompt " + std::to_string(i), alone.encode(prompts[i]), batched[static_cast<int64_t>(i)], 1e-5);
  ASSERT_TRUE(fs::exists(a.cache_file()));

  infer::PromptEncoder b(net, dir);  // a new run: everything from disk, bit-identical
  const torch::Tensor again = b.encode(prompts);
  EXPECT_EQ(b.computed(), 0);
  EXPECT_EQ(b.loaded_from_disk(), 3);
  EXPECT_TRUE(torch::equal(again, batched));

  // A run killed while appending leaves a torn record: it is cut off and recomputed.
  const auto size = fs::file_size(a.cache_file());
  fs::resize_file(a.cache_file(), size - 7);
  infer::PromptEncoder c(net, dir);
  expect_close("after a torn cache", c.encode(prompts), batched, 1e-5);  // one re-encoded alone
  EXPECT_EQ(c.loaded_from_disk(), 2);
  EXPECT_EQ(c.computed(), 1);
  infer::PromptEncoder d(net, dir);
  d.encode(prompts);
  EXPECT_EQ(d.loaded_from_disk(), 3);  // the recomputed record was appended after the cut

  // Other weights: another cache file, never the stale vectors.
  auto other = tiny_model(2);
  infer::PromptEncoder e(other, dir);
  EXPECT_NE(e.cache_file(), a.cache_file());
  EXPECT_FALSE(torch::allclose(e.encode(prompts), batched));
  EXPECT_EQ(e.computed(), 3);
}

TEST(Classifier, HeadAveragesPromptVectorsAndScoresAreSoftmaxes) {
  auto net = tiny_model(3);
  infer::PromptEncoder enc(net);
  infer::PromptBank bank;
  bank.name = "t";
  bank.classes = {{"effusion", {"small left pleural effusion", "pleural effusion"}, {"no pleural effusion"}},
                  {"ptx", {"pneumothorax"}, {"no pneumothorax"}}};
  const infer::ClassHead head = infer::build_class_head(enc, bank);
  expect_close("pos mean", head.pos[0], (enc.encode("small left pleural effusion") + enc.encode("pleural effusion")) / 2, 1e-6);
  const torch::Tensor g = torch::randn({5, net->config().embed_dim()});
  const torch::Tensor s = infer::class_scores(g, head);
  ASSERT_EQ(s.sizes(), (torch::IntArrayRef{5, 2, 2}));
  expect_close("pair sums", s.sum(2), torch::ones({5, 2}), 1e-6);
  const torch::Tensor manual = torch::sigmoid(torch::matmul(g, head.pos[1]) - torch::matmul(g, head.neg[1]));
  expect_close("binary = sigmoid(pos - neg)", infer::class_probabilities(g, head).select(1, 1), manual, 1e-6);
  bank.mode = infer::ClassifyMode::kMultiClass;
  const torch::Tensor m = infer::class_scores(g, infer::build_class_head(enc, bank));
  expect_close("multiclass rows", m.sum(1), torch::ones({5}), 1e-6);
}

TEST(Localizer, PresenceGatesRegionsUnlessAll) {
  auto net = tiny_model(4);
  infer::PromptEncoder enc(net);
  data::Gray8 im;
  im.width = 80;
  im.height = 64;
  im.pixels.resize(80 * 64);
  for (size_t i = 0; i < im.pixels.size(); ++i) im.pixels[i] = static_cast<uint8_t>((i * 37) % 251);
  const std::vector<std::string> prompts = {"Findings suggesting pneumothorax.", "Heart size is normal."};
  infer::PromptBank bank;
  for (const auto& p : prompts) bank.classes.push_back(infer::presence_prompts(p));
  EXPECT_EQ(bank.classes[0].neg, std::vector<std::string>{"no pneumothorax. "});
  EXPECT_EQ(bank.classes[1].neg, std::vector<std::string>{"no Heart size is normal. "});
  const infer::ClassHead head = infer::build_class_head(enc, bank);
  infer::LocalizeOptions o;
  o.present_threshold = 1.0;  // nothing is present
  auto r = infer::Localizer(net, o, enc).run({im}, {"a"}, prompts, &head);
  ASSERT_EQ(r.size(), 2u);
  for (const auto& l : r) {
    EXPECT_FALSE(l.present);
    EXPECT_GT(l.probability, 0.0);
    EXPECT_LT(l.probability, 1.0);
    EXPECT_TRUE(l.regions.empty());
  }
  o.all = true;
  r = infer::Localizer(net, o, enc).run({im}, {"a"}, prompts, &head);
  EXPECT_FALSE(r[0].regions.empty());  // the heatmap's max is 1 > every threshold
  o.all = false;
  o.present_threshold = 0.0;
  r = infer::Localizer(net, o, enc).run({im}, {"a"}, prompts, &head);
  EXPECT_TRUE(r[0].present);
  EXPECT_FALSE(r[0].regions.empty());
  // The same probabilities as the classifier on the same image.
  const torch::Tensor p = infer::class_probabilities(infer::global_embeddings(net, {im}), head);
  EXPECT_NEAR(r[1].probability, p[0][1].item<double>(), 1e-6);
}

data::Gray8 pattern_image(int width, int height) {
  data::Gray8 im;
  im.width = width;
  im.height = height;
  im.pixels.resize(static_cast<size_t>(width * height));
  for (size_t i = 0; i < im.pixels.size(); ++i) im.pixels[i] = static_cast<uint8_t>((i * 37 + i / 50) % 251);
  return im;
}

// An ensemble's heatmap is the mean of its models' normalised heatmaps and its probability the mean
// of theirs; the models may differ in input size and map side; a model with itself is that model.
TEST(Localizer, EnsembleAveragesTheModelsHeatmapsAndProbabilities) {
  auto a = tiny_model(11), b = tiny_model(12, 96);
  ASSERT_NE(a->config().deep_side(), b->config().deep_side());
  infer::PromptEncoder ea(a), eb(b);
  const std::vector<std::string> prompts = {"Findings suggesting pneumothorax.", "Findings suggesting pleural effusion."};
  infer::PromptBank bank;
  for (const auto& p : prompts) bank.classes.push_back(infer::presence_prompts(p));
  const infer::ClassHead ha = infer::build_class_head(ea, bank), hb = infer::build_class_head(eb, bank);
  const std::vector<data::Gray8> images = {pattern_image(80, 64), pattern_image(50, 90)};
  infer::LocalizeOptions o;
  o.size = 64;
  o.batch = 1;  // two batches
  o.all = true;
  const auto ra = infer::Localizer(a, o, ea).run(images, {"x", "y"}, prompts, &ha);
  const auto rb = infer::Localizer(b, o, eb).run(images, {"x", "y"}, prompts, &hb);
  const auto both = infer::Localizer({a, b}, o, {&ea, &eb}).run(images, {"x", "y"}, prompts, {ha, hb});
  const auto self = infer::Localizer({a, a}, o, {&ea, &ea}).run(images, {"x", "y"}, prompts, {ha, ha});
  ASSERT_EQ(both.size(), 4u);
  ASSERT_EQ(self.size(), 4u);
  for (size_t i = 0; i < both.size(); ++i) {
    const std::string at = "case " + std::to_string(i);
    EXPECT_EQ(both[i].image, ra[i].image);
    EXPECT_EQ(both[i].prompt, ra[i].prompt);
    EXPECT_FALSE(torch::allclose(ra[i].heatmap.nan_to_num(0), rb[i].heatmap.nan_to_num(0), 1e-3, 1e-3)) << at;
    expect_close(at, both[i].heatmap.nan_to_num(0), ((ra[i].heatmap + rb[i].heatmap) / 2).nan_to_num(0), 1e-6);
    EXPECT_EQ(torch::isnan(both[i].heatmap).sum().item<int64_t>(), torch::isnan(ra[i].heatmap).sum().item<int64_t>()) << at;
    EXPECT_NEAR(both[i].probability, (ra[i].probability + rb[i].probability) / 2, 1e-6) << at;
    EXPECT_NE(ra[i].probability, rb[i].probability) << at;
    const int64_t arg = torch::argmax(both[i].heatmap.nan_to_num(-2)).item<int64_t>();
    EXPECT_EQ(both[i].peak_y * o.size + both[i].peak_x, arg) << at;
    EXPECT_FALSE(both[i].regions.empty()) << at;
    EXPECT_TRUE(torch::equal(self[i].heatmap.nan_to_num(0), ra[i].heatmap.nan_to_num(0))) << at;
    EXPECT_NEAR(self[i].probability, ra[i].probability, 1e-7) << at;
    EXPECT_EQ(self[i].peak_x, ra[i].peak_x) << at;
    EXPECT_EQ(self[i].peak_y, ra[i].peak_y) << at;
  }
  EXPECT_THROW(infer::Localizer({a, b}, o, {&ea}), Error);
  EXPECT_THROW(infer::Localizer({a, b}, o, {&ea, &eb}).run(images, {"x", "y"}, prompts, &ha), c10::Error);
}

// The contrast reading: each prompt's heatmap is SPEC §4's heatmap of its raw map minus W times the
// mean raw map of the references (the run's prompts and the extra contrast prompts), presence
// unchanged.
TEST(Localizer, ContrastReadingSubtractsTheReferencesMeanMap) {
  auto net = tiny_model(21);
  infer::PromptEncoder enc(net);
  const std::vector<std::string> prompts = {"Findings suggesting pneumothorax.", "Findings suggesting pleural effusion."};
  const std::string extra = "Heart size is normal.";
  infer::PromptBank bank;
  for (const auto& p : prompts) bank.classes.push_back(infer::presence_prompts(p));
  const infer::ClassHead head = infer::build_class_head(enc, bank);
  const std::vector<data::Gray8> images = {pattern_image(80, 64), pattern_image(50, 90)};
  infer::LocalizeOptions o;
  o.size = 64;
  o.all = true;
  const auto plain = infer::Localizer(net, o, enc).run(images, {"x", "y"}, prompts, &head);
  o.contrast = 1;
  const auto two = infer::Localizer(net, o, enc).run(images, {"x", "y"}, prompts, &head);
  o.contrast_prompts = {extra};
  const auto three = infer::Localizer(net, o, enc).run(images, {"x", "y"}, prompts, &head);
  o.contrast = 0.5;
  const auto half = infer::Localizer(net, o, enc).run(images, {"x", "y"}, prompts, &head);
  ASSERT_EQ(two.size(), 4u);
  ASSERT_EQ(three.size(), 4u);
  torch::NoGradGuard ng;
  const torch::Tensor deep = infer::image_embeddings(net, images, 0, images.size()).deep.cpu();
  const torch::Tensor t = enc.encode(std::vector<std::string>{prompts[0], prompts[1], extra}).cpu();
  for (size_t i = 0; i < images.size(); ++i) {
    const auto b = static_cast<int64_t>(i);
    std::vector<torch::Tensor> raw;
    for (int64_t q = 0; q < 3; ++q) raw.push_back(infer::similarity_map(deep[b], t[q]));
    const torch::Tensor mean2 = (raw[0] + raw[1]) / 2, mean3 = (raw[0] + raw[1] + raw[2]) / 3;
    for (size_t q = 0; q < 2; ++q) {
      const size_t k = 2 * i + q;
      const std::string at = "image " + std::to_string(i) + " prompt " + std::to_string(q);
      expect_close(at + ", 2 references", two[k].heatmap.nan_to_num(0),
                   infer::heatmap(raw[q] - mean2, o.size, o.heatmap).nan_to_num(0), 1e-5);
      expect_close(at + ", 3 references", three[k].heatmap.nan_to_num(0),
                   infer::heatmap(raw[q] - mean3, o.size, o.heatmap).nan_to_num(0), 1e-5);
      expect_close(at + ", 3 references, weight 0.5", half[k].heatmap.nan_to_num(0),
                   infer::heatmap(raw[q] - 0.5 * mean3, o.size, o.heatmap).nan_to_num(0), 1e-5);
      EXPECT_FALSE(torch::allclose(two[k].heatmap.nan_to_num(0), plain[k].heatmap.nan_to_num(0), 1e-3, 1e-3)) << at;
      EXPECT_EQ(two[k].probability, plain[k].probability) << at;
    }
    // Two references: the two prompts' contrast maps are each other's negatives, so their
    // normalised heatmaps are mirror images (h and -h).
    expect_close("mirror", two[2 * i].heatmap.nan_to_num(0), -two[2 * i + 1].heatmap.nan_to_num(0), 1e-5);
  }
  // One reference (a zero map at weight 1) and weights outside (0, 1] are refused.
  o.contrast_prompts.clear();
  EXPECT_THROW(infer::Localizer(net, o, enc).run(images, {"x", "y"}, {prompts[0]}, nullptr), Error);
  EXPECT_THROW(infer::contrast_queries(t, t.slice(0, 0, 1), 1), Error);
  EXPECT_THROW(infer::contrast_queries(t, t, 0), Error);
  EXPECT_THROW(infer::contrast_queries(t, t, 1.5), Error);
  EXPECT_THROW(infer::contrast_queries(t, t, std::nan("")), Error);
  // A negative weight is an error, not the reading silently off (0 is off).
  o.contrast = -0.5;
  EXPECT_THROW(infer::Localizer(net, o, enc), Error);
  expect_close("contrast_queries", infer::contrast_queries(t, t, 1), t - t.mean(0, true), 0);
}

// A grey PNG of the image (lossless, so the film read back is the image).
std::string write_png(const data::Gray8& im, const std::string& path) {
  cv::Mat m(static_cast<int>(im.height), static_cast<int>(im.width), CV_8UC1, const_cast<uint8_t*>(im.pixels.data()));
  if (!cv::imwrite(path, m)) throw std::runtime_error("cannot write " + path);
  return path;
}

// The centred reading: every map minus W times its mean over reference films, on each level the
// heatmaps read, so a prompt's heatmap is SPEC §4's heatmap of (regions - W mean) . query;
// presence unchanged. The films are read from disk a batch at a time.
TEST(Localizer, CentredReadingSubtractsTheReferenceFilmsMeanMaps) {
  auto net = tiny_model(31);
  net->set_heatmap_levels("both");
  infer::PromptEncoder enc(net);
  const std::vector<std::string> prompts = {"Findings suggesting pneumothorax.", "Findings suggesting pleural effusion."};
  infer::PromptBank bank;
  for (const auto& p : prompts) bank.classes.push_back(infer::presence_prompts(p));
  const infer::ClassHead head = infer::build_class_head(enc, bank);
  const std::vector<data::Gray8> images = {pattern_image(80, 64), pattern_image(50, 90)};
  const std::string dir = tmp_dir("centre");
  fs::create_directories(dir);
  std::vector<std::string> films;
  std::vector<data::Gray8> film_images = {images[0], pattern_image(60, 60), pattern_image(90, 70)};
  for (size_t i = 0; i < film_images.size(); ++i)
    films.push_back(write_png(film_images[i], dir + "/film" + std::to_string(i) + ".png"));
  torch::NoGradGuard ng;
  // mean_maps: the mean of each level's map over the films, whatever the batch.
  const auto means = infer::mean_maps(net, films, 2);
  ASSERT_EQ(means.size(), 2u);
  for (size_t j = 0; j < 2; ++j) {
    torch::Tensor sum;
    for (const auto& f : film_images) {
      const torch::Tensor m = model::heatmap_maps(net->config(), infer::image_embeddings(net, {f}, 0, 1))[j][0];
      sum = sum.defined() ? sum + m : m;
    }
    expect_close("mean map, level " + std::to_string(j), means[j], sum / 3.0, 1e-5);
    expect_close("batch 1", infer::mean_maps(net, films, 1)[j], means[j], 1e-5);
  }
  // Several models (an ensemble) read each film once: each model's means are its own.
  auto other = tiny_model(32);
  std::vector<model::AflocModel> pair{net, other};
  const auto both = infer::mean_maps(pair, films, 2);
  ASSERT_EQ(both.size(), 2u);
  ASSERT_EQ(both[1].size(), 1u);  // the other model reads its deep map only
  for (size_t j = 0; j < 2; ++j) expect_close("ensemble, model 0", both[0][j], means[j], 1e-6);
  expect_close("ensemble, model 1", both[1][0], infer::mean_maps(other, films, 2)[0], 1e-6);
  infer::LocalizeOptions o;
  o.size = 64;
  o.all = true;
  const auto plain = infer::Localizer(net, o, enc).run(images, {"x", "y"}, prompts, &head);
  o.centre = 0.5;
  infer::Localizer centred(net, o, enc);
  EXPECT_THROW(centred.run(images, {"x", "y"}, prompts, &head), Error);  // no reference films yet
  centred.set_centre(films);
  EXPECT_EQ(centred.centre_films(), 3);
  const auto half = centred.run(images, {"x", "y"}, prompts, &head);
  ASSERT_EQ(half.size(), 4u);
  const auto levels = model::heatmap_maps(net->config(), infer::image_embeddings(net, images, 0, images.size()));
  const torch::Tensor t = enc.encode(prompts).cpu();
  for (size_t i = 0; i < images.size(); ++i)
    for (size_t q = 0; q < 2; ++q) {
      const size_t k = 2 * i + q;
      const std::string at = "image " + std::to_string(i) + " prompt " + std::to_string(q);
      std::vector<torch::Tensor> sims;
      for (size_t j = 0; j < 2; ++j)
        sims.push_back(infer::similarity_map((levels[j][static_cast<int64_t>(i)] - 0.5 * means[j]).cpu(), t[static_cast<int64_t>(q)]));
      expect_close(at, half[k].heatmap.nan_to_num(0), infer::mean_heatmap(sims, o.size, o.heatmap).nan_to_num(0), 1e-5);
      EXPECT_FALSE(torch::allclose(half[k].heatmap.nan_to_num(0), plain[k].heatmap.nan_to_num(0), 1e-3, 1e-3)) << at;
      EXPECT_EQ(half[k].probability, plain[k].probability) << at;
    }
  // A film that is its own only reference, at weight 1: nothing is left of its maps.
  o.centre = 1;
  infer::Localizer self(net, o, enc);
  self.set_centre({films[0]});
  for (const auto& l : self.run({images[0]}, {"x"}, prompts, nullptr))
    EXPECT_LT(l.heatmap.nan_to_num(0).abs().max().item<double>(), 1e-3) << l.prompt;
  // Errors: weights outside [0, 1], reference films without a weight, an unreadable film (named),
  // no films, means of another model's maps.
  o.centre = 1.5;
  EXPECT_THROW(infer::Localizer(net, o, enc), Error);
  o.centre = -0.5;  // not silently off (0 is off)
  EXPECT_THROW(infer::Localizer(net, o, enc), Error);
  o.centre = 0;
  EXPECT_THROW(infer::Localizer(net, o, enc).set_centre(films), Error);
  std::ofstream(dir + "/bad.png") << "not a png";
  try {
    infer::mean_maps(net, {films[0], dir + "/bad.png"});
    ADD_FAILURE() << "an unreadable film was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.png"), std::string::npos) << e.what();
  }
  EXPECT_THROW(infer::mean_maps(net, {}), Error);
  auto levels_copy = levels;
  EXPECT_THROW(infer::centre_maps(levels_copy, {means[0]}, 0.5), Error);
  EXPECT_THROW(infer::centre_maps(levels_copy, {means[1], means[0]}, 0.5), Error);
  EXPECT_THROW(infer::centre_maps(levels_copy, means, 0), Error);
  fs::remove_all(dir);
}

TEST(ImageEncoder, InferenceLayoutMatchesThePlainForward) {
  // Folded batch norms + channels-last must give the plain forward's embeddings, for basic blocks
  // (ResNet-18) and bottlenecks with downsampling (ResNet-50); BN statistics perturbed so that a
  // wrong fold would show. Also with a dilated layer3 (the fold must keep each conv's dilation).
  // And with shift-and-stitch (dense_map: five passes, one map interleaved from four).
  struct Case {
    int depth;
    bool dilate, dense;
  };
  for (const auto& [depth, dilate, dense] : std::vector<Case>{{18, false, false}, {50, false, false}, {10, true, false}, {50, true, false}, {10, false, true}}) {
    torch::manual_seed(depth);
    model::AflocConfig c = model::preset("tiny");
    c.resnet.depth = depth;
    c.resnet.width = 16;
    c.resnet.dilate_layer3 = dilate;
    c.dense_map = dense;
    c.bert.vocab_size = 50;
    model::ImageEncoder enc(c);
    {
      torch::NoGradGuard ng;
      for (auto& m : enc->modules(false))
        if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
          bn->weight.uniform_(0.5, 1.5);
          bn->bias.normal_(0, 0.2);
          bn->running_mean.normal_(0, 0.2);
          bn->running_var.uniform_(0.5, 2.0);
        }
    }
    enc->eval();
    const torch::Tensor x = torch::rand({3, 3, c.image_size, c.image_size}) * 2 - 1;
    torch::InferenceMode guard;
    const auto plain = enc->forward(x);
    enc->optimize_for_inference();
    const auto fast = enc->forward(x, /*with_shallow=*/false);
    EXPECT_FALSE(fast.shallow.defined());
    const double scale = plain.deep.abs().max().item<double>();
    const std::string tag = "depth " + std::to_string(depth) + (dilate ? " dilated" : "") + (dense ? " dense" : "");
    EXPECT_EQ(plain.deep.size(2), c.deep_side()) << tag;
    expect_close("deep, " + tag, fast.deep / scale, plain.deep / scale, 1e-5);
    expect_close("global, " + tag, fast.global, plain.global, 1e-5 * plain.global.abs().max().item<double>());
    EXPECT_TRUE(fast.deep.is_contiguous());
  }
}

TEST(ImageEncoder, DenseMapIsTheNetworkOnTranslatedInputsInterleaved) {
  // Without the cell alignment or an internal resize, the dense map's cell (2i + a, 2j + b) is the
  // plain network's cell (i, j) on the input moved a * 8 px up and b * 8 px left (half the stride
  // 16), edge pixels replicated: every fine cell is one the network computes in training.
  torch::manual_seed(3);
  model::AflocConfig c = model::preset("tiny");
  c.resnet.width = 8;
  c.image_size = 64;
  c.upsample_size = 0;
  c.align_cells = false;
  c.bert.vocab_size = 50;
  model::ImageEncoder enc(c);
  enc->eval();
  torch::InferenceMode guard;
  const torch::Tensor x = torch::rand({2, 3, 64, 64}) * 2 - 1;
  const torch::Tensor plain = enc->forward(x, false).deep;
  enc->dense_map = true;
  const auto dense = enc->forward(x, false);
  const int64_t n = plain.size(2);
  ASSERT_EQ(dense.deep.sizes(), (std::vector<int64_t>{2, plain.size(1), 2 * n, 2 * n}));
  c.dense_map = true;
  EXPECT_EQ(dense.deep.size(2), c.deep_side());
  auto move = [](const torch::Tensor& t, int64_t dim, int64_t by) {  // t[p] = t[min(p + by, end)]
    const int64_t len = t.size(dim);
    return torch::cat({t.narrow(dim, by, len - by), t.narrow(dim, len - 1, 1).expand_as(t.narrow(dim, 0, by))}, dim);
  };
  using torch::indexing::None;
  using torch::indexing::Slice;
  const double scale = plain.abs().max().item<double>();
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b) {
      const torch::Tensor moved = move(move(x, 2, 8 * a), 3, 8 * b);
      enc->dense_map = false;
      const torch::Tensor ref = enc->forward(moved, false).deep;
      enc->dense_map = true;
      const torch::Tensor got = dense.deep.index({Slice(), Slice(), Slice(a, None, 2), Slice(b, None, 2)});
      expect_close("cells (2i+" + std::to_string(a) + ", 2j+" + std::to_string(b) + ")", got / scale, ref / scale, 5e-5);
    }
  // v_g is the plain pass's: diagnosis does not change.
  enc->dense_map = false;
  expect_close("global", dense.global, enc->forward(x, false).global, 1e-6);
  // With align_cells, fine cell k is centred at 8k + 3.5 px, where the heatmap's bilinear
  // upsampling (align_corners=False) draws it: passes at 3.5 and 3.5 + 8 px.
  model::AflocConfig al = model::preset("tiny");
  al.bert.vocab_size = 50;
  model::ImageEncoder aligned(al);
  EXPECT_DOUBLE_EQ(aligned->cell_shift, 7.5);
  EXPECT_DOUBLE_EQ(aligned->dense_shifts[0], 3.5);
  EXPECT_DOUBLE_EQ(aligned->dense_shifts[1], 11.5);
}

TEST(ImageEncoder, HeatmapLevelsReadTheShallowMapWhereItsCellsLook) {
  // tiny's align_cells shifts the input by 7.5 px for layer3 (stride 16), so a layer2 cell i
  // (stride 8) looks at 8i + 7.5 px while SPEC §4's upsampling draws cell i at 8i + 3.5: the map
  // read is the network's at i - 1/2 on both axes, (s[i - 1] + s[i]) / 2, edge cell repeated.
  model::AflocConfig c = model::preset("tiny");
  model::ImageEmbeddings e;
  e.deep = torch::randn({2, 4, 3, 3});
  e.shallow = torch::randn({2, 4, 6, 6});
  EXPECT_EQ(model::heatmap_maps(c, e).size(), 1u);
  EXPECT_TRUE(model::heatmap_maps(c, e)[0].equal(e.deep));
  c.heatmap_levels = "both";
  const auto both = model::heatmap_maps(c, e);
  ASSERT_EQ(both.size(), 2u);
  EXPECT_TRUE(both[0].equal(e.deep));
  const auto at = [&](int64_t y, int64_t x) {
    return e.shallow.index({torch::indexing::Slice(), torch::indexing::Slice(), std::max<int64_t>(y, 0), std::max<int64_t>(x, 0)});
  };
  for (int64_t y : {0, 1, 5})
    for (int64_t x : {0, 2, 5}) {
      const torch::Tensor want = (at(y - 1, x - 1) + at(y - 1, x) + at(y, x - 1) + at(y, x)) / 4;
      expect_close("cell " + std::to_string(y) + "," + std::to_string(x),
                   both[1].index({torch::indexing::Slice(), torch::indexing::Slice(), y, x}), want, 1e-6);
    }
  c.heatmap_levels = "shallow";
  const auto shallow = model::heatmap_maps(c, e);
  ASSERT_EQ(shallow.size(), 1u);
  EXPECT_TRUE(shallow[0].equal(both[1]));
  // Where the deep stride is layer2's (dilated layer3: shift 3.5 px) or without align_cells (the
  // authors' geometry), the shallow map is read as it is.
  c.resnet.dilate_layer3 = true;
  EXPECT_TRUE(model::heatmap_maps(c, e)[0].equal(e.shallow));
  c.resnet.dilate_layer3 = false;
  c.align_cells = false;
  EXPECT_TRUE(model::heatmap_maps(c, e)[0].equal(e.shallow));
  // Asked for a shallow level the embeddings do not hold: an error.
  e.shallow = torch::Tensor();
  EXPECT_THROW(model::heatmap_maps(c, e), c10::Error);
}

TEST(Localizer, BothLevelsAverageTheTwoMapsHeatmaps) {
  // heatmap_levels "both": each heatmap is the mean of the deep-only and shallow-only heatmaps.
  model::AflocModel net = tiny_model(8);
  net->eval();
  infer::PromptEncoder prompts(net);
  const data::Gray8 img = pattern_image(96, 96);
  const std::vector<std::string> ps = {"Findings suggesting pneumothorax.", "small left pleural effusion"};
  auto run = [&](const std::string& levels) {
    net->set_heatmap_levels(levels);
    infer::Localizer loc(net, {}, prompts);
    return loc.run({img}, {"a"}, ps);
  };
  const auto deep = run("deep"), shallow = run("shallow"), both = run("both");
  ASSERT_EQ(both.size(), 2u);
  for (size_t q = 0; q < 2; ++q) {
    const torch::Tensor want = (deep[q].heatmap + shallow[q].heatmap) / 2;
    EXPECT_TRUE(torch::allclose(both[q].heatmap, want, 1e-5, 1e-6, /*equal_nan=*/true)) << q;
    EXPECT_FALSE(torch::allclose(deep[q].heatmap, shallow[q].heatmap, 1e-3, 1e-3, true)) << q;
  }
  EXPECT_THROW(net->set_heatmap_levels("all"), Error);
  EXPECT_EQ(net->config().heatmap_levels, "both");  // unchanged by the bad value
}

// eval-phantom's library call checks the readings' weights as the localizer does: 0 is off, a
// value outside (0, 1] (a negative one too) is an error naming the reading, before any film is read.
TEST(LocalizationEval, ReadingWeightsOutsideTheRangeAreErrors) {
  auto net = tiny_model(41);
  const std::vector<eval::GtImage> none;
  const auto message = [&](const eval::LocEvalOptions& o) -> std::string {
    try {
      eval::evaluate_localization(net, none, o);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  eval::LocEvalOptions o;
  o.classify = false;
  o.bootstrap = 0;
  o.progress = false;
  EXPECT_EQ(message(o), "");  // both off: no films, no cases, no error
  for (const double w : {-0.5, 1.5}) {
    o.contrast = w;
    EXPECT_NE(message(o).find("contrast reading: weight"), std::string::npos) << "contrast " << w << ": " << message(o);
    o.contrast = 0;
    o.centre = w;
    EXPECT_NE(message(o).find("centred reading: weight"), std::string::npos) << "centre " << w << ": " << message(o);
    o.centre = 0;
  }
}

// Scoring against boxes needs every finding's boxes: a ground truth without them, or with a box of
// no area, is an error naming the film and the finding before any film is read (the film here
// does not exist); scored against masks, the boxes are not looked at.
TEST(LocalizationEval, BoxTruthNeedsEveryFindingsBoxes) {
  auto net = tiny_model(42);
  eval::LocEvalOptions o;
  o.classify = false;
  o.bootstrap = 0;
  o.progress = false;
  o.truth = eval::Truth::kBoxes;
  eval::GtImage im{"id0", "/nonexistent/film0.png", {{"Nodule", "/nonexistent/mask0.png", {{10, 12, 8, 8}}},
                                                       {"Mass", "/nonexistent/mask1.png", {}}}};
  const auto message = [&](const std::vector<eval::GtImage>& images) -> std::string {
    try {
      eval::evaluate_localization(net, images, o);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(message({im}), "ground truth boxes: /nonexistent/film0.png has a Mass finding without boxes");
  im.instances[1].boxes = {{3, 4, 0, 5}};
  EXPECT_EQ(message({im}), "ground truth boxes: /nonexistent/film0.png has a Mass box that is not (x, y, w, h) with w, h > 0");
  im.instances[1].boxes = {{3, 4, 5}};
  EXPECT_NE(message({im}).find("Mass box that is not (x, y, w, h)"), std::string::npos);
  o.truth = eval::Truth::kMasks;  // now the missing film is what fails
  EXPECT_NE(message({im}).find("/nonexistent/film0.png"), std::string::npos);
  EXPECT_EQ(message({im}).find("box"), std::string::npos) << message({im});
  EXPECT_EQ(eval::truth_from_name("boxes"), eval::Truth::kBoxes);
  EXPECT_EQ(eval::truth_name(eval::truth_from_name("masks")), "masks");
  EXPECT_THROW(eval::truth_from_name("outlines"), Error);
}

}  // namespace
}  // namespace afloc::test
