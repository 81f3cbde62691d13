// Trainer pieces in-process: the batch loader's determinism (worker count, resume position,
// distributed shards) and the heatmap path on a model.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <filesystem>

#include "afloc/data/csv.h"
#include "afloc/data/datasets.h"
#include "afloc/data/phantom_writer.h"
#include "afloc/data/prepare.h"
#include "afloc/eval/localization_eval.h"
#include "afloc/infer/heatmap.h"
#include "afloc/text/clean.h"
#include "afloc/text/vocab_builder.h"
#include "afloc/train/autocast.h"
#include "afloc/train/loader.h"
#include "afloc/io/model_io.h"
#include "afloc/io/npy.h"
#include "afloc/io/safetensors.h"
#include "afloc/infer/localizer.h"
#include "afloc/io/state_dict.h"
#include "afloc/common/error.h"
#include <fstream>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;

namespace afloc::train {
namespace {

class LoaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Per process: CTest runs these tests as parallel processes.
    dir_ = (fs::path(::testing::TempDir()) / ("afloc_loader_world_" + std::to_string(::getpid()))).string();
    fs::remove_all(dir_);
    data::phantom::SynthOptions o;
    o.out = dir_;
    o.n_train = 40;
    o.n_val = 0;
    o.n_test = 0;
    o.size = 64;
    o.progress = false;
    data::phantom::write_phantom_world(o);
  }
  static PairData pairs() {
    data::MimicOptions mo;
    mo.root = dir_ + "/mimic-cxr-jpg";
    data::SkipLog skipped;
    return prepare_pairs(data::read_mimic(mo).samples, skipped);
  }
  static std::function<model::TokenBatch(const std::vector<std::string>&)> tokenizer() {
    // A fixed tiny vocab is enough: only determinism is checked here.
    static const text::Vocab vocab = text::build_wordpiece_vocab({"heart size is normal no pleural effusion"}, {});
    static const model::AflocModel net = [] {
      model::AflocConfig c = model::preset("tiny");
      c.bert.vocab_size = vocab.size();
      return model::AflocModel(c, vocab);
    }();
    return [](const std::vector<std::string>& caps) { return net->tokenize(caps, model::TextMode::kCaption); };
  }
  static std::vector<Batch> epoch(const PairData& d, LoaderOptions o, int64_t e, int64_t first = 0) {
    BatchLoader l(d, o, tokenizer());
    l.start_epoch(e, first);
    std::vector<Batch> out;
    Batch b;
    while (l.next(b)) out.push_back(b);
    return out;
  }
  static std::string dir_;
};
std::string LoaderTest::dir_;

TEST_F(LoaderTest, SameBatchesWhateverTheWorkersAndAfterAResume) {
  const PairData d = pairs();
  ASSERT_EQ(d.samples.size(), 40u);
  LoaderOptions o;
  o.batch_size = 8;
  o.image_size = 64;
  o.workers = 1;
  const auto a = epoch(d, o, 2);
  o.workers = 3;
  o.prefetch = 2;
  const auto b = epoch(d, o, 2);
  ASSERT_EQ(a.size(), 5u);
  ASSERT_EQ(b.size(), 5u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].samples, b[i].samples);
    EXPECT_TRUE(torch::equal(a[i].images, b[i].images));
    EXPECT_TRUE(torch::equal(a[i].tokens.ids, b[i].tokens.ids));
  }
  // Starting at batch 3 (a resume) gives batches 3 and 4 of the same epoch.
  const auto c = epoch(d, o, 2, 3);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].samples, a[3].samples);
  EXPECT_TRUE(torch::equal(c[1].tokens.ids, a[4].tokens.ids));
  // Another epoch: another order and other captions.
  const auto e3 = epoch(d, o, 3);
  EXPECT_NE(e3[0].samples, a[0].samples);
  // Images are (x/255 - 0.5)/0.5 of the resized file.
  EXPECT_LE(a[0].images.max().item<float>(), 1.0f);
  EXPECT_GE(a[0].images.min().item<float>(), -1.0f);
}

TEST_F(LoaderTest, DistributedShardsPartitionTheGlobalBatch) {
  const PairData d = pairs();
  LoaderOptions o;
  o.batch_size = 8;
  o.image_size = 64;
  const auto whole = epoch(d, o, 0);  // world 1, batch 8
  LoaderOptions r = o;
  r.batch_size = 4;
  r.world = 2;
  r.rank = 0;
  const auto r0 = epoch(d, r, 0);
  r.rank = 1;
  const auto r1 = epoch(d, r, 0);
  ASSERT_EQ(r0.size(), whole.size());
  for (size_t i = 0; i < whole.size(); ++i) {
    std::vector<int64_t> joined = r0[i].samples;
    joined.insert(joined.end(), r1[i].samples.begin(), r1[i].samples.end());
    EXPECT_EQ(joined, whole[i].samples) << "global batch " << i;
  }
}

TEST_F(LoaderTest, UnreadableImagesAreReplacedAndCounted) {
  PairData d = pairs();
  const std::string good = d.samples[0].image;
  d.samples[0].image = dir_ + "/missing.jpg";
  const std::string bad = dir_ + "/bad.jpg";
  std::ofstream(bad) << "not an image";
  d.samples[1].image = bad;
  LoaderOptions o;
  o.batch_size = 8;
  o.image_size = 64;
  o.shuffle = false;
  BatchLoader l(d, o, tokenizer());
  auto run_epoch = [&](int64_t e) {
    l.start_epoch(e);
    std::vector<int64_t> seen;
    Batch b;
    while (l.next(b)) seen.insert(seen.end(), b.samples.begin(), b.samples.end());
    return seen;
  };
  const auto first = run_epoch(0);
  EXPECT_EQ(first.size(), 40u);
  EXPECT_EQ(l.bad_images(), 2);
  EXPECT_EQ(std::count(first.begin(), first.end(), 0), 0);
  EXPECT_EQ(std::count(first.begin(), first.end(), 1), 0);
  // A sample found unreadable is not read again in later epochs (each failed read may cost a DICOM
  // helper restart): even once its file is readable, it keeps the same replacement for the run.
  std::filesystem::copy_file(good, bad, std::filesystem::copy_options::overwrite_existing);
  const auto second = run_epoch(1);
  EXPECT_EQ(second, first);
  EXPECT_EQ(l.bad_images(), 2);
}

// `afloc prepare`: the prepared set is the loader's own resize, done once. Its manifest lists the
// pairs in order, its PNGs hold exactly resize_pad's pixels, the loader draws the same batches from
// it, and an interrupted run resumes; a folder of another size or source is refused.
TEST_F(LoaderTest, PreparedSetGivesTheSameBatchesAndResumes) {
  data::MimicOptions mimic;
  mimic.root = dir_ + "/mimic-cxr-jpg";
  const auto src = data::read_mimic(mimic).samples;
  ASSERT_EQ(src.size(), 40u);
  data::PrepareOptions po;
  po.out = dir_ + "/prepared";
  po.source_root = mimic.root;
  po.size = 48;  // the 64-px films are resized
  po.threads = 3;
  po.source = {{"root", mimic.root}};
  const auto r = data::prepare_images(src, po);
  EXPECT_EQ(r.written, 40);
  EXPECT_EQ(r.reused, 0);
  EXPECT_EQ(r.per_split.at("train"), 40);
  EXPECT_EQ(r.skipped.total(), 0);
  EXPECT_GT(r.bytes, 40 * 100);

  data::ManifestOptions man;
  man.path = r.manifest;
  const auto back = data::read_manifest(man);
  EXPECT_EQ(back.skipped.total(), 0);
  ASSERT_EQ(back.samples.size(), src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(back.samples[i].id, src[i].id);
    EXPECT_EQ(back.samples[i].report, src[i].report);
    EXPECT_EQ(back.samples[i].split, src[i].split);
    EXPECT_EQ(fs::path(back.samples[i].image).lexically_normal(),
              (fs::path(po.out) / data::prepared_image_path(src[i].image, mimic.root)).lexically_normal());
    const data::Gray8 prepared = data::read_gray8(back.samples[i].image);
    const data::Gray8 resized = data::resize_pad(data::read_gray8(src[i].image), 48);
    EXPECT_EQ(prepared.height, 48);
    EXPECT_EQ(prepared.width, 48);
    EXPECT_EQ(prepared.pixels, resized.pixels) << src[i].image;
  }

  data::SkipLog skipped;
  const PairData from_sources = prepare_pairs(src, skipped), from_prepared = prepare_pairs(back.samples, skipped);
  LoaderOptions o;
  o.batch_size = 8;
  o.image_size = 48;
  o.cache_bytes = 0;
  const auto a = epoch(from_sources, o, 1), b = epoch(from_prepared, o, 1);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].samples, b[i].samples);
    EXPECT_TRUE(torch::equal(a[i].images, b[i].images)) << "batch " << i;
    EXPECT_TRUE(torch::equal(a[i].tokens.ids, b[i].tokens.ids)) << "batch " << i;
  }

  // Cut short: no manifest yet and an image missing. The same call keeps the other 39.
  const std::string manifest_text = read_file(r.manifest);
  fs::remove(r.manifest);
  fs::remove(back.samples[7].image);
  const auto again = data::prepare_images(src, po);
  EXPECT_EQ(again.written, 1);
  EXPECT_EQ(again.reused, 39);
  EXPECT_FALSE(fs::exists(po.out + "/unreadable.csv"));
  EXPECT_EQ(read_file(again.manifest), manifest_text);
  EXPECT_EQ(data::read_gray8(back.samples[7].image).pixels, data::resize_pad(data::read_gray8(src[7].image), 48).pixels);

  data::PrepareOptions other = po;
  other.size = 32;
  try {
    data::prepare_images(src, other);
    ADD_FAILURE() << "another size into the same folder";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("size 48, not 32"), std::string::npos) << e.what();
  }
  other = po;
  other.source = {{"root", "/elsewhere"}};
  EXPECT_THROW(data::prepare_images(src, other), Error);
  EXPECT_TRUE(fs::exists(again.manifest));  // a refused run changes nothing
}

TEST_F(LoaderTest, PrepareSkipsUnreadableImagesAndKeepsNamesApart) {
  data::MimicOptions mimic;
  mimic.root = dir_ + "/mimic-cxr-jpg";
  const auto src = data::read_mimic(mimic).samples;
  const fs::path folder = fs::path(src[0].image).parent_path();
  // a.jpg and a.png would both become a.png; x.jpg lies outside the root; bad.jpg is no image.
  fs::copy_file(src[0].image, folder / "a.jpg", fs::copy_options::overwrite_existing);
  fs::copy_file(src[1].image, folder / "a.png", fs::copy_options::overwrite_existing);  // a JPEG named .png
  fs::create_directories(dir_ + "/outside");
  fs::copy_file(src[2].image, dir_ + "/outside/x.jpg", fs::copy_options::overwrite_existing);
  std::ofstream((folder / "bad.jpg").string()) << "not an image";
  auto sample = [](const std::string& id, const std::string& image, const std::string& report) {
    return data::Sample{id, image, report, "train", ""};
  };
  const std::vector<data::Sample> samples = {
      sample("s0", (folder / "a.jpg").string(), "Heart size is normal, \"no\" effusion.\nNo pneumothorax."),
      sample("s1", (folder / "a.jpg").string(), "A second report of the same film."),
      sample("s2", (folder / "bad.jpg").string(), "Unreadable."),
      sample("s3", (folder / "a.png").string(), "Another film."),
      sample("s4", dir_ + "/outside/x.jpg", "Outside the root.")};
  data::PrepareOptions po;
  po.out = dir_ + "/prepared_edge";
  po.source_root = mimic.root;
  po.size = 32;
  po.threads = 2;
  data::SkipLog before;
  before.add("empty report", "row 9");
  po.read_skipped = before;
  const auto r = data::prepare_images(samples, po);
  EXPECT_EQ(r.written, 3);  // a.jpg once for two pairs, a.png, x.jpg
  EXPECT_EQ(r.skipped.counts.at("unreadable image"), 1);
  EXPECT_EQ(r.skipped.counts.at("empty report"), 1);
  ASSERT_EQ(r.skipped.examples.at("unreadable image").size(), 1u);
  EXPECT_NE(r.skipped.examples.at("unreadable image")[0].find("bad.jpg"), std::string::npos);
  // unreadable.csv lists every one (the skip log keeps three examples).
  const data::CsvTable listed = data::read_csv(po.out + "/unreadable.csv");
  ASSERT_EQ(listed.rows.size(), 1u);
  EXPECT_EQ(listed.at(0, listed.column("image")), samples[2].image);
  EXPECT_NE(listed.at(0, listed.column("error")).find("bad.jpg"), std::string::npos);
  data::ManifestOptions man;
  man.path = r.manifest;
  const auto back = data::read_manifest(man).samples;
  ASSERT_EQ(back.size(), 4u);
  EXPECT_EQ(back[0].id, "s0");
  EXPECT_EQ(back[0].report, samples[0].report);
  EXPECT_EQ(back[1].id, "s1");
  EXPECT_EQ(back[0].image, back[1].image);
  EXPECT_EQ(back[2].id, "s3");
  EXPECT_EQ(fs::path(back[0].image).filename(), "a.png");
  EXPECT_EQ(fs::path(back[2].image).filename(), "a-2.png");
  EXPECT_EQ(fs::path(back[3].image).parent_path().filename(), "external");
  EXPECT_EQ(data::read_gray8(back[2].image).pixels, data::resize_pad(data::read_gray8(samples[3].image), 32).pixels);
  EXPECT_EQ(data::prepared_image_path("/r/files/p1/x.jpg", "/r"), "images/files/p1/x.png");
  EXPECT_EQ(data::prepared_image_path("/r/../q/x.dcm", "/r"), "images/external/x.png");
  const auto rec = nlohmann::json::parse(read_file(po.out + "/prepare.json"));
  EXPECT_EQ(rec["size"], 32);
  EXPECT_EQ(rec["complete"], true);
  EXPECT_EQ(rec["skipped"]["unreadable image"], 1);
  // Nothing readable at all: an error, and no manifest to train on.
  data::PrepareOptions none = po;
  none.out = dir_ + "/prepared_none";
  try {
    data::prepare_images({samples[2]}, none);
    ADD_FAILURE() << "a set without one readable image was prepared";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jpg"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(none.out + "/manifest.csv"));
  for (const char* f : {"a.jpg", "a.png", "bad.jpg"}) fs::remove(folder / f);
}

// Autocast where it was asked for: on a GPU without bfloat16 tensor cores the default loop.amp falls
// back to float32 with a warning; --amp-cpu is kept on any CPU, with a warning where it will be slow.
TEST(Autocast, PlanFollowsTheRequestAndTheHardware) {
  for (bool cuda : {false, true}) {
    const auto off = plan_autocast(false, cuda, false);
    EXPECT_FALSE(off.on);
    EXPECT_TRUE(off.warning.empty());
    const auto fast = plan_autocast(true, cuda, true);
    EXPECT_TRUE(fast.on);
    EXPECT_TRUE(fast.warning.empty());
  }
  const auto old_gpu = plan_autocast(true, true, false);
  EXPECT_FALSE(old_gpu.on);
  EXPECT_NE(old_gpu.warning.find("float32"), std::string::npos) << old_gpu.warning;
  const auto old_cpu = plan_autocast(true, false, false);
  EXPECT_TRUE(old_cpu.on);
  EXPECT_NE(old_cpu.warning.find("slower"), std::string::npos) << old_cpu.warning;
}

TEST(Checkpoint, WeightsFromAnotherConfigAreAClearError) {
  const std::string dir = (fs::path(::testing::TempDir()) / "afloc_ckpt_mismatch").string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  const text::Vocab vocab = text::build_wordpiece_vocab({"small left pleural effusion"}, {});
  model::AflocConfig c = model::preset("tiny");
  c.bert.vocab_size = vocab.size();
  model::AflocModel net(c, vocab);
  io::save_tensor_file(dir + "/model.pt", io::state_dict(*net));
  vocab.save(dir + "/vocab.txt");
  // The config beside the weights says ResNet-34: the weights do not fit it.
  c.resnet.depth = 34;
  std::ofstream(dir + "/model.json") << model::config_to_string(c);
  try {
    io::load_model(dir, torch::kCPU);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(dir), std::string::npos) << what;
    EXPECT_NE(what.find("model.pt"), std::string::npos) << what;
    EXPECT_NE(what.find("layer"), std::string::npos) << what;  // names the missing/mis-shaped tensors
  }
  // With the right config it loads, in eval mode.
  c.resnet.depth = model::preset("tiny").resnet.depth;
  std::ofstream(dir + "/model.json") << model::config_to_string(c);
  const io::LoadedModel t = io::load_model(dir, torch::kCPU);
  EXPECT_FALSE(t.model->is_training());
}

TEST(Safetensors, RoundTripHandBuiltFileAndErrors) {
  const std::string dir = ::testing::TempDir();
  io::TensorMap t = {{"a.f32", torch::randn({2, 3})},
                     {"b.i64", torch::arange(5)},
                     {"c.bf16", torch::randn({4}).to(torch::kBFloat16)},
                     {"d.u8", torch::tensor({1, 2, 255}).to(torch::kByte)},
                     {"e.empty", torch::zeros({0, 3})}};
  io::save_safetensors(dir + "/afloc_rt.safetensors", t, {{"format", "test"}});
  const auto back = io::load_safetensors(dir + "/afloc_rt.safetensors");
  ASSERT_EQ(back.tensors.size(), t.size());
  for (const auto& [k, v] : t) EXPECT_TRUE(torch::equal(back.tensors.at(k), v)) << k;
  EXPECT_EQ(back.metadata.at("format"), "test");
  // A file written by hand from the format description: two F32 values 1.0 and 2.0.
  const std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(header.size());
  bytes += header;
  const float v[2] = {1.0f, 2.0f};
  bytes.append(reinterpret_cast<const char*>(v), 8);
  std::ofstream(dir + "/afloc_hand.safetensors", std::ios::binary) << bytes;
  const auto hand = io::load_safetensors(dir + "/afloc_hand.safetensors");
  EXPECT_TRUE(torch::equal(hand.tensors.at("x"), torch::tensor({1.0f, 2.0f})));
  // Truncated data and absurd headers are errors naming the file.
  std::ofstream(dir + "/afloc_short.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() - 4);
  EXPECT_THROW(io::load_safetensors(dir + "/afloc_short.safetensors"), Error);
  std::string huge(8, '\xff');
  std::ofstream(dir + "/afloc_huge.safetensors", std::ios::binary) << huge << "{}";
  try {
    io::load_safetensors(dir + "/afloc_huge.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("afloc_huge.safetensors"), std::string::npos);
  }
}

TEST(Localizer, RegionsAndNpyRoundTrip) {
  // Two blobs above 0.5, one of them also above 0.8.
  torch::Tensor h = torch::full({20, 30}, -1.0f);
  h.index_put_({torch::indexing::Slice(2, 6), torch::indexing::Slice(3, 8)}, 0.9f);
  h.index_put_({torch::indexing::Slice(10, 12), torch::indexing::Slice(20, 29)}, 0.6f);
  h[0][0] = NAN;
  const auto regs = infer::find_regions(h, {0.5, 0.8});
  ASSERT_EQ(regs.size(), 3u);
  EXPECT_EQ(regs[0].threshold, 0.5);
  EXPECT_EQ(regs[0].pixels, 20);  // 4x5, largest first
  EXPECT_EQ(regs[0].x, 3);
  EXPECT_EQ(regs[0].w, 5);
  EXPECT_EQ(regs[1].pixels, 18);
  EXPECT_NEAR(regs[1].score_mean, 0.6, 1e-6);
  EXPECT_EQ(regs[2].threshold, 0.8);
  EXPECT_EQ(infer::slug("Findings suggesting pneumothorax."), "findings_suggesting_pneumothorax");
  const std::string f = ::testing::TempDir() + "/afloc_rt.npy";
  std::vector<float> v(h.data_ptr<float>(), h.data_ptr<float>() + h.numel());
  io::save_npy(f, v, {20, 30});
  std::vector<int64_t> shape;
  const auto back = io::load_npy(f, &shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{20, 30}));
  EXPECT_TRUE(std::isnan(back[0]));
  EXPECT_EQ(back[45], v[45]);
}

TEST(Heatmap, FollowsTheQueryAndIsNormalised) {
  // Regions (D=4, 10x10) equal to the query in a 3x3 patch: the heatmap peaks there.
  torch::Tensor regions = torch::zeros({4, 10, 10});
  const torch::Tensor q = torch::tensor({1.0f, 0.5f, -0.5f, 2.0f});
  regions.index_put_({torch::indexing::Slice(), torch::indexing::Slice(6, 9), torch::indexing::Slice(1, 4)},
                     q.view({4, 1, 1}).expand({4, 3, 3}));
  const torch::Tensor h = infer::heatmap(infer::similarity_map(regions, q), 224);
  ASSERT_EQ(h.sizes(), (torch::IntArrayRef{224, 224}));
  const torch::Tensor valid = h.masked_select(~torch::isnan(h));
  EXPECT_FLOAT_EQ(valid.max().item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(valid.min().item<float>(), -1.0f);
  EXPECT_TRUE(std::isnan(h[0][0].item<float>()));  // 14-px margin
  EXPECT_TRUE(std::isnan(h[223][100].item<float>()));
  const auto arg = torch::argmax(torch::nan_to_num(h, -2.0f)).item<int64_t>();
  const int64_t y = arg / 224, x = arg % 224;
  EXPECT_GT(y, 6 * 224 / 10);
  EXPECT_LT(y, 9 * 224 / 10);
  EXPECT_GT(x, 1 * 224 / 10);
  EXPECT_LT(x, 4 * 224 / 10);
  // scipy "reflect" smoothing of a constant map stays constant.
  const torch::Tensor c = infer::gaussian_smooth(torch::full({5, 7}, 3.0f), 1.5);
  EXPECT_NEAR((c - 3.0f).abs().max().item<float>(), 0.0f, 1e-6);
  // sigma 0 means no smoothing (scipy's convention), not the default.
  const torch::Tensor r = torch::randn({10, 10});
  EXPECT_TRUE(torch::equal(infer::gaussian_smooth(r, 0.0), r));
  infer::HeatmapOptions none;
  none.sigma = 0;
  const torch::Tensor plain = infer::heatmap(r, 224, none), smoothed = infer::heatmap(r, 224, {});
  EXPECT_TRUE(torch::allclose(plain.nan_to_num(0.0), infer::normalize(infer::upsample(r, 224, 224, "bilinear"), 14, "minmax").nan_to_num(0.0)));
  EXPECT_FALSE(torch::allclose(plain.nan_to_num(0.0), smoothed.nan_to_num(0.0)));
  // The centre prior peaks in the middle of the chest.
  const torch::Tensor p = eval::centre_prior(100);
  // Centre at (x, y) = (50, 45) in continuous coordinates = between pixels 49/50 and 44/45.
  const int64_t am = torch::argmax(p).item<int64_t>();
  EXPECT_EQ(am / 100, 44);
  EXPECT_EQ(am % 100, 49);
  EXPECT_FLOAT_EQ(p[44][49].item<float>(), p[45][50].item<float>());
}

// The pointing game's ceiling rests on where a heatmap's arg-max can land: next to a cell centre
// of the upsampled map, moved inside the margin. Random maps of several sides, with the default
// smoothing, a light one and none, must peak on one of those pixels.
TEST(Heatmap, ArgmaxLandsOnAPeakPixel) {
  torch::manual_seed(3);
  for (const int64_t side : {10, 13, 19}) {
    for (const double sigma : {-1.0, 0.3, 0.0}) {
      infer::HeatmapOptions o;
      o.sigma = sigma;
      const auto [rows, cols] = eval::peak_pixels(side, side, 224, o);
      ASSERT_FALSE(rows.empty());
      EXPECT_LT(rows.size(), static_cast<size_t>(2 * side + 2));
      for (int k = 0; k < 200; ++k) {
        const torch::Tensor h = infer::heatmap(torch::randn({side, side}), 224, o);
        const auto arg = torch::argmax(torch::nan_to_num(h, -2.0f)).item<int64_t>();
        EXPECT_TRUE(std::binary_search(rows.begin(), rows.end(), arg / 224)) << side << " row " << arg / 224;
        EXPECT_TRUE(std::binary_search(cols.begin(), cols.end(), arg % 224)) << side << " col " << arg % 224;
      }
    }
  }
  // 10x10 at 224 with the 14-px margin: centres at 22.4 i + 10.7; the outer ones move inside.
  const auto [rows, cols] = eval::peak_pixels(10, 10, 224, {});
  EXPECT_EQ(rows.front(), 14);
  EXPECT_EQ(rows.back(), 209);
  EXPECT_TRUE(std::binary_search(rows.begin(), rows.end(), 33));
  EXPECT_TRUE(std::binary_search(rows.begin(), rows.end(), 34));
  EXPECT_FALSE(std::binary_search(rows.begin(), rows.end(), 44));
  infer::HeatmapOptions cubic;
  cubic.interpolation = "bicubic";
  EXPECT_TRUE(eval::peak_pixels(10, 10, 224, cubic).first.empty());  // no ceiling claimed
}

}  // namespace
}  // namespace afloc::train
