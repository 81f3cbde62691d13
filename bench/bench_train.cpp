// Pretraining throughput: the data loader alone (JPEG decode + resize + caption sampling +
// tokenization, no cache, all workers) against one optimiser step of the model (forward +
// backward + Adam) on the same batches, for the tiny and paper configurations. The loader must
// outrun the model by >= 3x; report both from the same run.
//   build/bin/bench_train --benchmark_min_time=3
// The data is a phantom world written to $TMPDIR (224-px JPEGs, as MIMIC-CXR-JPG after the
// authors' offline resize); BM_LoaderFilm reads full-resolution films instead, before and after
// `afloc prepare`.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <torch/csrc/autograd/profiler_legacy.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <unistd.h>

#include "afloc/common/error.h"
#include "afloc/common/threads.h"
#include "afloc/data/datasets.h"
#include "afloc/data/dicom.h"
#include "afloc/data/phantom_writer.h"
#include "afloc/data/prepare.h"
#include "afloc/text/clean.h"
#include "afloc/text/vocab_builder.h"
#include "afloc/train/autocast.h"
#include "afloc/train/loader.h"
#include "afloc/train/run_config.h"

namespace fs = std::filesystem;

namespace {

struct World {
  afloc::train::PairData pairs;
  afloc::text::Vocab vocab;
};

// A phantom world in $TMPDIR, written by the first run and reused by later ones; its MIMIC root.
std::string bench_world(const std::string& name, int64_t n_train, int64_t n_val, int64_t size) {
  const std::string dir = (fs::temp_directory_path() / name).string();
  if (!fs::exists(dir + "/phantom.json")) {
    afloc::data::phantom::SynthOptions o;
    o.out = dir;
    o.n_train = n_train;
    o.n_val = n_val;
    o.n_test = 0;
    o.size = size;
    o.progress = false;
    afloc::data::phantom::write_phantom_world(o);
  }
  return dir + "/mimic-cxr-jpg";
}

const World& world() {
  static const World w = [] {
    afloc::data::MimicOptions mo;
    mo.root = bench_world("afloc_bench_world", 512, -1, 224);
    afloc::data::SkipLog skipped;
    World r;
    r.pairs = afloc::train::prepare_pairs(afloc::data::read_mimic(mo).samples, skipped);
    std::vector<std::string> corpus;
    for (const auto& s : r.pairs.sentences) corpus.push_back(afloc::text::join_caption(s));
    r.vocab = afloc::text::build_wordpiece_vocab(corpus, {});
    return r;
  }();
  return w;
}

afloc::model::AflocModel make_model(const std::string& preset) {
  // "phantom": the model of configs/phantom_tiny.json (the recipe the README times), read from
  // the file itself so that the bench follows the recipe.
  afloc::model::AflocConfig c =
      preset == "phantom" ? afloc::train::load_run_config(AFLOC_SOURCE_DIR "/configs/phantom_tiny.json").model
                          : afloc::model::preset(preset);
  c.bert.vocab_size = world().vocab.size();
  if (preset == "paper") c.text.lowercase = true;
  torch::manual_seed(0);
  return afloc::model::AflocModel(c, world().vocab);
}

// Full-resolution films as MIMIC-CXR-JPG ships them (2,788 px square: the 7.8 million pixels of
// its usual 2544 x 3056; 2.4-3.4 MB JPEGs), and the same films after `afloc prepare` at 224 px.
const afloc::train::PairData& film_pairs(bool prepared) {
  static const std::pair<afloc::train::PairData, afloc::train::PairData> both = [] {
    afloc::data::MimicOptions mo;
    mo.root = bench_world("afloc_bench_films", 16, 0, 2788);
    const auto films = afloc::data::read_mimic(mo).samples;
    afloc::data::PrepareOptions po;
    po.out = (fs::temp_directory_path() / "afloc_bench_films" / "prepared").string();
    po.source_root = mo.root;
    po.threads = afloc::hardware_threads();
    afloc::data::ManifestOptions man;
    man.path = afloc::data::prepare_images(films, po).manifest;
    // Each film listed 32 times (512 pairs, as BM_Loader's world): an epoch's start and end would
    // otherwise weigh on 2 batches.
    auto repeat = [](const std::vector<afloc::data::Sample>& s) {
      std::vector<afloc::data::Sample> r;
      for (int k = 0; k < 32; ++k) r.insert(r.end(), s.begin(), s.end());
      return r;
    };
    afloc::data::SkipLog skipped;
    return std::make_pair(afloc::train::prepare_pairs(repeat(films), skipped),
                          afloc::train::prepare_pairs(repeat(afloc::data::read_manifest(man).samples), skipped));
  }();
  return prepared ? both.second : both.first;
}

// Images per second of the loader alone: batches of `batch` at the preset's input size, no cache.
void loader_rate(benchmark::State& state, const std::string& preset, const afloc::train::PairData& pairs) {
  const auto net = make_model(preset);
  afloc::train::LoaderOptions o;
  o.batch_size = state.range(0);
  o.image_size = net->config().image_size;
  o.workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  o.cache_bytes = 0;
  afloc::train::BatchLoader loader(pairs, o, [&net](const std::vector<std::string>& caps) {
    return net->tokenize(caps, afloc::model::TextMode::kCaption);
  });
  int64_t epoch = 0, images = 0;
  loader.start_epoch(epoch);
  afloc::train::Batch b;
  for (auto _ : state) {
    if (!loader.next(b)) {
      loader.start_epoch(++epoch);
      loader.next(b);
    }
    images += b.images.size(0);
  }
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(images), benchmark::Counter::kIsRate);
}

void BM_Loader(benchmark::State& state, const std::string& preset) { loader_rate(state, preset, world().pairs); }

// The paper's loader on full-resolution films (prepared 0), and on the same films prepared (1).
void BM_LoaderFilm(benchmark::State& state) {
  const bool prepared = state.range(1) != 0;
  loader_rate(state, "paper", film_pairs(prepared));
  state.SetLabel(prepared ? "afloc prepare'd 224-px PNGs" : "2788-px JPEG films");
}

// Training pairs per second of the model alone (forward, backward, clip, Adam) on a fixed batch;
// the second argument 1 runs the forward under bfloat16 autocast (afloc train --amp-cpu).
void BM_TrainStep(benchmark::State& state, const std::string& preset) {
  auto net = make_model(preset);
  const int64_t b = state.range(0), s = net->config().image_size;
  const bool amp = state.range(1) != 0;
  std::vector<std::string> caps;
  std::mt19937_64 rng(0);
  for (int64_t i = 0; i < b; ++i) caps.push_back(afloc::text::sample_caption(world().pairs.sentences[static_cast<size_t>(i)], rng));
  const auto tokens = net->tokenize(caps, afloc::model::TextMode::kCaption);
  const torch::Tensor images = torch::rand({b, 3, s, s}) * 2 - 1;
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(2e-5).betas({0.5, 0.999}).weight_decay(1e-6));
  net->train();
  int64_t pairs = 0;
  std::unique_ptr<torch::autograd::profiler::RecordProfile> prof;  // AFLOC_PROFILE, as in BM_StepPart
  if (const char* p = std::getenv("AFLOC_PROFILE")) prof = std::make_unique<torch::autograd::profiler::RecordProfile>(std::string(p));
  for (auto _ : state) {
    opt.zero_grad();
    afloc::loss::AlignmentLoss l;
    {
      afloc::train::AutocastGuard ag(amp, torch::Device(torch::kCPU));
      l = net->loss(net->encode_images(images), net->encode_text(tokens));
    }
    l.total.backward();
    torch::nn::utils::clip_grad_norm_(net->parameters(), 0.25);
    opt.step();
    benchmark::DoNotOptimize(l.total.item<float>());
    pairs += b;
  }
  state.counters["pairs/s"] = benchmark::Counter(static_cast<double>(pairs), benchmark::Counter::kIsRate);
  if (amp) state.SetLabel("bfloat16 autocast");
}

// Where a step's time goes: forward + backward of one part with the rest held fixed.
void BM_StepPart(benchmark::State& state, const std::string& preset) {
  auto net = make_model(preset);
  const int64_t b = state.range(0), part = state.range(1), s = net->config().image_size;
  std::vector<std::string> caps;
  std::mt19937_64 rng(0);
  for (int64_t i = 0; i < b; ++i) caps.push_back(afloc::text::sample_caption(world().pairs.sentences[static_cast<size_t>(i)], rng));
  const auto tokens = net->tokenize(caps, afloc::model::TextMode::kCaption);
  const torch::Tensor images = torch::rand({b, 3, s, s}) * 2 - 1;
  net->train();
  afloc::model::ImageEmbeddings ie_fixed;
  afloc::model::TextEmbeddings te_fixed;
  {
    torch::NoGradGuard ng;
    ie_fixed = net->encode_images(images);
    te_fixed = net->encode_text(tokens);
  }
  // AFLOC_PROFILE=trace.json records one iteration as a chrome trace (for finding the hot ops).
  std::unique_ptr<torch::autograd::profiler::RecordProfile> prof;
  if (const char* p = std::getenv("AFLOC_PROFILE")) prof = std::make_unique<torch::autograd::profiler::RecordProfile>(std::string(p));
  for (auto _ : state) {
    torch::Tensor l;
    if (part == 0) {  // image encoder
      const auto ie = net->encode_images(images);
      l = ie.shallow.sum() + ie.deep.sum() + ie.global.sum();
    } else if (part == 1) {  // text encoder
      const auto te = net->encode_text(tokens);
      l = te.words.sum() + te.sentences.nan_to_num().sum() + te.report.sum();
    } else {  // the three losses on fixed embeddings (leaves with gradients)
      afloc::model::ImageEmbeddings ie = ie_fixed;
      afloc::model::TextEmbeddings te = te_fixed;
      ie.shallow = ie.shallow.detach().requires_grad_();
      ie.deep = ie.deep.detach().requires_grad_();
      ie.global = ie.global.detach().requires_grad_();
      te.words = te.words.detach().requires_grad_();
      te.sentences = te.sentences.detach().requires_grad_();
      te.report = te.report.detach().requires_grad_();
      if (part == 2) {
        l = net->loss(ie, te).total;
      } else if (part == 3) {
        const auto r = afloc::loss::local_loss(ie.shallow, te.words, te.word_lens);
        l = r.loss0 + r.loss1;
      } else if (part == 4) {
        const auto r = afloc::loss::local_loss(ie.deep, te.sentences, te.sent_lens);
        l = r.loss0 + r.loss1;
      } else {  // the sentence loss on the shallow map (loss.shallow_sentence_weight)
        const auto r = afloc::loss::local_loss(ie.shallow, te.sentences, te.sent_lens);
        l = r.loss0 + r.loss1;
      }
    }
    l.backward();
    benchmark::DoNotOptimize(l.item<float>());
  }
  const char* labels[] = {"image encoder", "text encoder", "losses", "word loss", "sentence loss",
                          "shallow sentence loss"};
  state.SetLabel(labels[part]);
}

BENCHMARK_CAPTURE(BM_StepPart, tiny, std::string("tiny"))->Args({32, 0})->Args({32, 1})->Args({32, 2})->Args({32, 3})->Args({32, 4})->Args({32, 5})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Loader, tiny, std::string("tiny"))->Arg(32)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_TrainStep, tiny, std::string("tiny"))
    ->Args({32, 0})
    ->Args({32, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_TrainStep, phantom, std::string("phantom"))
    ->Args({32, 0})
    ->Args({32, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_Loader, paper, std::string("paper"))->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_TrainStep, paper, std::string("paper"))
    ->Args({8, 0})
    ->Args({8, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_LoaderFilm)->ArgsProduct({{8}, {0, 1}})->ArgNames({"batch", "prepared"})->Unit(benchmark::kMillisecond)->UseRealTime();

// The shallow-map sentence loss's largest product on its own (batch 32, 128-d, 400 regions against
// 32 captions x 40 units), forward and backward, to compare with the same call in Python.
void BM_BmmProbe(benchmark::State& state) {
  const int64_t B = 32, D = 128, R = 400, C = 32, T = 40;
  torch::Tensor ctx = torch::randn({B, D, R}, torch::requires_grad());
  torch::Tensor att = torch::randn({B, R, C * T}, torch::requires_grad());
  torch::Tensor g = torch::randn({B, D, C * T});
  for (auto _ : state) {
    auto w = torch::bmm(ctx, att);
    w.backward(g);
  }
  state.SetLabel("probe: bmm fwd+bwd (Python 1.13 here: ~114 ms)");
}
BENCHMARK(BM_BmmProbe)->Unit(benchmark::kMillisecond)->UseRealTime();

// One DICOM read (GDCM's JPEG-lossless 512x512 XA example, as Debian ships it): decoded in the
// afloc-dicom helper process (read_dicom's default: a corrupt file cannot abort this process)
// against in this process. The second argument adds that many GiB of touched memory, as a training
// process holds with its model and queue (a fork would copy their page tables; posix_spawn does not).
static void BM_DicomRead(benchmark::State& state) {
  const std::string file = "/usr/share/doc/libgdcm3.0/examples/00191113.dcm";
  if (!fs::exists(file)) {
    state.SkipWithError("no GDCM example file (apt-get install libgdcm-tools)");
    return;
  }
  std::vector<char> ballast(static_cast<size_t>(state.range(1)) << 30, 1);
  const bool in_helper = state.range(0) != 0;
  for (auto _ : state) benchmark::DoNotOptimize(afloc::data::read_dicom(file, in_helper).stored.data());
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  benchmark::DoNotOptimize(ballast.data());
}
BENCHMARK(BM_DicomRead)->ArgsProduct({{0, 1}, {0, 2}})->ArgNames({"in_helper", "GiB"})->Unit(benchmark::kMillisecond)->UseRealTime();

// A film-sized DICOM: 3000 x 2500, 16-bit, uncompressed explicit VR little endian (15 MB, a
// digital radiograph's size), written here element by element. BM_ReadFileLarge, reading the same
// file into memory, is the reference: the least any reader pays for its bytes.
std::string large_dicom() {
  const std::string path = (fs::temp_directory_path() / "afloc_bench_large.dcm").string();
  if (fs::exists(path)) return path;
  std::string f(128, '\0');
  f += "DICM";
  auto u16 = [&](uint16_t v) { f += static_cast<char>(v & 0xFF), f += static_cast<char>(v >> 8); };
  auto u32 = [&](uint32_t v) { u16(static_cast<uint16_t>(v & 0xFFFF)), u16(static_cast<uint16_t>(v >> 16)); };
  auto text = [&](uint16_t g, uint16_t e, const char* vr, std::string v) {
    if (v.size() % 2) v += vr[0] == 'U' ? '\0' : ' ';
    u16(g), u16(e), f += vr, u16(static_cast<uint16_t>(v.size())), f += v;
  };
  auto us = [&](uint16_t e, uint16_t v) { u16(0x0028), u16(e), f += "US", u16(2), u16(v); };
  text(0x0002, 0x0010, "UI", "1.2.840.10008.1.2.1");
  text(0x0008, 0x0060, "CS", "DX");
  us(0x0002, 1);
  text(0x0028, 0x0004, "CS", "MONOCHROME2");
  us(0x0010, 3000), us(0x0011, 2500), us(0x0100, 16), us(0x0101, 12), us(0x0102, 11), us(0x0103, 0);
  const uint32_t n = 3000u * 2500u * 2u;
  u16(0x7FE0), u16(0x0010), f += "OW", u16(0), u32(n);
  std::string pixels(n, '\0');
  for (size_t i = 0; i < n; i += 2) pixels[i] = static_cast<char>(i * 2654435761u >> 24), pixels[i + 1] = static_cast<char>(i % 16);
  std::ofstream(path, std::ios::binary) << f << pixels;
  return path;
}

static void BM_DicomReadLarge(benchmark::State& state) {
  const std::string file = large_dicom();
  const bool in_helper = state.range(0) != 0;
  for (auto _ : state) benchmark::DoNotOptimize(afloc::data::read_dicom(file, in_helper).stored.data());
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DicomReadLarge)->Arg(0)->Arg(1)->ArgName("in_helper")->Unit(benchmark::kMillisecond)->UseRealTime();

static void BM_ReadFileLarge(benchmark::State& state) {
  const std::string file = large_dicom();
  for (auto _ : state) benchmark::DoNotOptimize(afloc::read_file(file).data());
  state.SetLabel("reference: the file's bytes into memory");
}
BENCHMARK(BM_ReadFileLarge)->Unit(benchmark::kMillisecond)->UseRealTime();
// Indexing a MIMIC-CXR-JPG tree (read_mimic): a stat per image and a read per report, on
// `io_threads` threads, over a fixture of 30,000 studies (45,000 images, empty files; a 330-byte
// report each) in MIMIC-CXR's layout, made once. The one-thread run is the reference. With
// cold = 1 the page cache is dropped before each pass (root only: /proc/sys/vm/drop_caches), as on
// a first run or a network file system; cold = 0 reads from the cache.
std::string mimic_fixture() {
  const fs::path root = fs::temp_directory_path() / "afloc_bench_mimic";
  if (fs::exists(root / "mimic-cxr-2.0.0-split.csv")) return root.string();
  const std::string report =
      "FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  ___ with cough\n \n COMPARISON:  ___\n \n"
      " FINDINGS: \n \n The lungs are clear without focal consolidation.  No pleural effusion or\n pneumothorax is"
      " seen.  Heart size is normal.\n \n IMPRESSION: \n \n No acute cardiopulmonary process.\n";
  std::string meta = "dicom_id,subject_id,study_id,ViewPosition\n", split = "dicom_id,study_id,subject_id,split\n";
  for (int s = 0; s < 30000; ++s) {
    const std::string subject = std::to_string(10000000 + s / 3), study = std::to_string(50000000 + s);
    const fs::path dir = root / "files" / ("p" + subject.substr(0, 2)) / ("p" + subject);
    fs::create_directories(dir / ("s" + study));
    std::ofstream(dir / ("s" + study + ".txt")) << report;
    for (int k = 0; k < (s % 2 == 0 ? 2 : 1); ++k) {
      const std::string dicom = std::to_string(s) + "-" + std::to_string(k);
      std::ofstream(dir / ("s" + study) / (dicom + ".jpg"));
      meta += dicom + "," + subject + "," + study + "," + (k == 0 ? "PA" : "LATERAL") + "\n";
      split += dicom + "," + study + "," + subject + ",train\n";
    }
  }
  std::ofstream(root / "mimic-cxr-2.0.0-metadata.csv") << meta;
  std::ofstream(root / "mimic-cxr-2.0.0-split.csv") << split;
  return root.string();
}

static void BM_MimicIndex(benchmark::State& state) {
  afloc::data::MimicOptions o;
  o.root = mimic_fixture();
  o.io_threads = static_cast<int>(state.range(0));
  const bool cold = state.range(1) != 0;
  size_t pairs = 0;
  for (auto _ : state) {
    if (cold) {
      state.PauseTiming();
      ::sync();
      std::ofstream drop("/proc/sys/vm/drop_caches");
      if (!(drop << "3" << std::flush)) {
        state.SkipWithError("cannot drop the page cache (needs root)");
        break;
      }
      drop.close();
      state.ResumeTiming();
    }
    pairs = afloc::data::read_mimic(o).samples.size();
  }
  state.counters["studies/s"] = benchmark::Counter(static_cast<double>(pairs * state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MimicIndex)->ArgsProduct({{1, 16}, {0, 1}})->ArgNames({"io_threads", "cold"})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

}  // namespace

int main(int argc, char** argv) {
  afloc::set_threads(0);
  // afloc::set_threads flushes denormals; AFLOC_BENCH_DENORMALS=1 measures without that.
  if (std::getenv("AFLOC_BENCH_DENORMALS")) at::globalContext().setFlushDenormal(false);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

