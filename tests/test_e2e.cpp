// End to end through the `afloc` program: synth a phantom world, train, crash, resume, evaluate.
#include <gtest/gtest.h>

#include <filesystem>
#include <cmath>
#include <fstream>
#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <cstdlib>
#include <sstream>

#include <thread>
#include <unistd.h>

#include <torch/torch.h>

#include "afloc/data/csv.h"
#include "afloc/data/image.h"
#include "afloc/eval/localization_eval.h"
#include "afloc/io/npy.h"
#include "afloc/io/safetensors.h"
#include "afloc/io/tensor_file.h"
#include "afloc/io/torch_checkpoint.h"
#include "box_cases.h"
#include "cli_run.h"

namespace fs = std::filesystem;

namespace afloc::test {
namespace {

// CTest runs every test of this program as its own process, in parallel: each process works in
// its own directories.
std::string tmp(const std::string& name) {
  const fs::path p = fs::path(::testing::TempDir()) / ("afloc_e2e_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  return p.string();
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// step -> step_loss from a metrics.jsonl.
std::map<int64_t, double> step_losses(const std::string& path) {
  std::map<int64_t, double> out;
  std::istringstream in(read(path));
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("step_loss")) out[j["step"].get<int64_t>()] = j["step_loss"].get<double>();
  }
  return out;
}

// image id -> its file, from a phantom world's ground_truth/instances.jsonl.
std::map<std::string, std::string> image_files(const std::string& world) {
  std::map<std::string, std::string> out;
  std::istringstream lines(read(world + "/ground_truth/instances.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const auto j = nlohmann::json::parse(line);
    out[j["dicom_id"].get<std::string>()] = world + "/" + j["image"].get<std::string>();
  }
  return out;
}

// The contact sheet shows the studies the world holds: its first studies as pretraining sees them,
// the same with or without an unseen set, and with --unseen a last row of the unseen set's films.
TEST(Synth, ContactSheetShowsTheWorldsStudiesAndAnUnseenRow) {
  const std::string dir = tmp("sheet_world"), cwd = tmp("sheet_cwd"), with_unseen = tmp("sheet_unseen.png");
  const std::string common = "--log-level warn synth -n 12 --n-val 3 -m 10 --size 96 --seed 5 --sheet-n 4";
  // A bare file name: the sheet goes in the working directory.
  fs::create_directories(cwd);
  const CliRun a = run_cli_env("cd " + cwd + " &&", common + " --contact-sheet sheet.png");
  ASSERT_EQ(a.code, 0) << a.out;
  const std::string plain = cwd + "/sheet.png";
  const CliRun b = run_cli(common + " --unseen --n-unseen 4 --out " + dir + " --contact-sheet " + with_unseen);
  ASSERT_EQ(b.code, 0) << b.out;
  const data::Gray8 p = data::read_gray8(plain), u = data::read_gray8(with_unseen);
  const int64_t tile = 96, row = 96 + 64;  // a film and its caption
  ASSERT_EQ(p.width, 2 * tile);
  ASSERT_EQ(p.height, 2 * row);
  ASSERT_EQ(u.width, 2 * tile);
  ASSERT_EQ(u.height, 3 * row);
  EXPECT_TRUE(std::equal(p.pixels.begin(), p.pixels.end(), u.pixels.begin()))
      << "the unseen set changed the pretraining studies shown";
  // The unseen row's first tile is the world's first unseen film (up to its outline and JPEG).
  const data::Gray8 film = data::read_gray8(dir + "/covid_rural/jpgs/phantom_0.jpg");
  ASSERT_EQ(film.width, tile);
  auto mean_diff = [&](int64_t y0) {
    double sum = 0;
    for (int64_t y = 0; y < tile; ++y)
      for (int64_t x = 0; x < tile; ++x)
        sum += std::abs(static_cast<double>(u.pixels[static_cast<size_t>((y0 + y) * u.width + x)]) -
                        film.pixels[static_cast<size_t>(y * tile + x)]);
    return sum / static_cast<double>(tile * tile);
  };
  const double to_unseen_tile = mean_diff(2 * row), to_first_tile = mean_diff(0);
  EXPECT_LT(to_unseen_tile, 4.0);
  EXPECT_GT(to_first_tile, to_unseen_tile + 4.0);
}

class E2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ::setenv("AFLOC_CACHE_DIR", tmp("prompt_cache").c_str(), 1);  // not the user's ~/.cache
    world_ = tmp("world");
    const CliRun r = run_cli("--log-level warn synth --out " + world_ + " -n 40 --n-val 8 -m 12 --size 96 --seed 3");
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static std::string train_args(const std::string& out) {
    return "--log-level warn train -d " + world_ + "/mimic-cxr-jpg -o " + out +
           " -b 8 -e 2 --lr 1e-4 --log-every 1 --checkpoint-every 3 --max-steps 8 -w 2";
  }
  static std::string world_;
};
std::string E2E::world_;

TEST_F(E2E, ResumeAfterACrashRepeatsTheUninterruptedRun) {
  const std::string a = tmp("run_a"), b = tmp("run_b");
  const CliRun full = run_cli(train_args(a) + " --json");
  ASSERT_EQ(full.code, 0) << full.out;
  const auto ja = nlohmann::json::parse(full.out.substr(full.out.find('{')));
  EXPECT_EQ(ja["steps"], 8);
  EXPECT_EQ(ja["train_samples"], 40);
  EXPECT_TRUE(fs::exists(a + "/checkpoints/final/model.pt"));
  EXPECT_TRUE(fs::exists(a + "/checkpoints/final/vocab.txt"));
  EXPECT_TRUE(fs::exists(a + "/checkpoints/final/run.json"));

  // Killed (no clean-up at all) after step 5, i.e. two steps after the step-3 checkpoint and past
  // the epoch boundary at step 5 (40 pairs / batch 8).
  const CliRun crashed = run_cli(train_args(b) + " --crash-after-step 5");
  EXPECT_EQ(crashed.code, 137) << crashed.out;
  EXPECT_EQ(read(b + "/checkpoints/latest.txt"), "step-00000003\n");
  // A second start without --resume refuses to overwrite.
  const CliRun again = run_cli(train_args(b));
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.out.find("--resume"), std::string::npos) << again.out;
  // No loop length flags: the run goes on to its own end (8 steps), not to the defaults' (5
  // epochs). Checkpointing may change on resume (every 4 steps instead of 3) without changing the
  // trajectory.
  const CliRun resumed = run_cli("--log-level warn train -o " + b + " --resume --checkpoint-every 4 --keep 5 --json");
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_EQ(nlohmann::json::parse(resumed.out.substr(resumed.out.find('{')))["steps"], 8) << resumed.out;
  EXPECT_TRUE(fs::exists(b + "/checkpoints/step-00000004"));
  EXPECT_FALSE(fs::exists(b + "/checkpoints/step-00000006"));
  EXPECT_EQ(resumed.out.find("not applied"), std::string::npos) << resumed.out;

  const auto la = step_losses(a + "/metrics.jsonl"), lb = step_losses(b + "/metrics.jsonl");
  ASSERT_EQ(la.size(), 8u);
  ASSERT_EQ(lb.size(), 8u) << "steps 4-5 logged before the crash must be replaced, not repeated";
  for (const auto& [step, loss] : la) {
    ASSERT_TRUE(lb.count(step)) << step;
    EXPECT_NEAR(lb.at(step), loss, 1e-5 * std::max(1.0, std::abs(loss))) << "step " << step;
  }
  // Validation ran at the epoch end in both runs.
  EXPECT_NE(read(b + "/metrics.jsonl").find("val_loss"), std::string::npos);

  // A finished run can be extended by a loop flag given with --resume.
  const CliRun extended = run_cli("--log-level warn train -o " + b + " --resume --max-steps 10 --json");
  ASSERT_EQ(extended.code, 0) << extended.out;
  EXPECT_EQ(nlohmann::json::parse(extended.out.substr(extended.out.find('{')))["steps"], 10) << extended.out;
  EXPECT_EQ(step_losses(b + "/metrics.jsonl").size(), 10u);

  // A moved run (another disk, another working directory) resumes where it is now: run.json's
  // "out" names where it was started, which no longer exists and must not be recreated. Its data
  // moved too: -d given with --resume says where.
  const std::string moved = tmp("run_b_moved"), moved_world = tmp("world_moved");
  fs::rename(b, moved);
  fs::rename(world_, moved_world);
  const CliRun again_moved = run_cli("--log-level warn train -o " + moved + " -d " + moved_world +
                                     "/mimic-cxr-jpg --resume -e 3 --max-steps 12 --json");
  fs::rename(moved_world, world_);
  ASSERT_EQ(again_moved.code, 0) << again_moved.out;
  EXPECT_EQ(nlohmann::json::parse(again_moved.out.substr(again_moved.out.find('{')))["steps"], 12) << again_moved.out;
  EXPECT_FALSE(fs::exists(b));
  EXPECT_EQ(step_losses(moved + "/metrics.jsonl").size(), 12u);
  EXPECT_NE(read(moved + "/run.json").find(moved), std::string::npos);
}

// The autocast path written for CUDA (bfloat16), exercised on CPU with --amp-cpu: the same
// optimiser steps as float32 within bfloat16's precision, weights and optimiser state kept in
// float32, and a crash resumed exactly.
TEST_F(E2E, BfloatAutocastTrainsLikeFloat32AndResumesExactly) {
  const std::string f32 = tmp("run_f32"), amp = tmp("run_amp"), amp_b = tmp("run_amp_b");
  const CliRun r32 = run_cli(train_args(f32) + " --json");
  ASSERT_EQ(r32.code, 0) << r32.out;
  const CliRun ra = run_cli(train_args(amp) + " --amp-cpu --json");
  ASSERT_EQ(ra.code, 0) << ra.out;
  EXPECT_NE(read(amp + "/run.json").find("\"amp_cpu\": true"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(r32.out.substr(r32.out.find('{')))["autocast"], false) << r32.out;
  EXPECT_EQ(nlohmann::json::parse(ra.out.substr(ra.out.find('{')))["autocast"], true) << ra.out;

  const auto l32 = step_losses(f32 + "/metrics.jsonl"), la = step_losses(amp + "/metrics.jsonl");
  ASSERT_EQ(l32.size(), 8u);
  ASSERT_EQ(la.size(), 8u);
  int differ = 0;
  for (const auto& [step, loss] : l32) {
    ASSERT_TRUE(std::isfinite(la.at(step))) << "step " << step;
    // bfloat16 keeps 8 significant bits; the runs drift apart slowly over 8 steps.
    EXPECT_NEAR(la.at(step), loss, 0.03 * std::abs(loss)) << "step " << step;
    differ += la.at(step) != loss;
  }
  EXPECT_GT(differ, 0) << "--amp-cpu changed no loss: autocast did not engage";

  for (const auto& [name, t] : io::load_tensor_file(amp + "/checkpoints/final/model.pt")) {
    if (t.is_floating_point()) {
      EXPECT_EQ(t.scalar_type(), torch::kFloat) << name;
      EXPECT_TRUE(torch::isfinite(t).all().item<bool>()) << name;
    }
  }

  // Started from a config file with --amp-cpu and resumed with the same config and flags but without
  // --amp-cpu (so the config, not the checkpoint's run.json, is the command's base): the checkpoint's
  // autocast setting still wins, as the rest of its numerics do.
  const std::string cfg = tmp("amp_cfg.json");
  std::ofstream(cfg) << R"({"loop": {"validate": true}})";
  const CliRun crashed = run_cli(train_args(amp_b) + " -c " + cfg + " --amp-cpu --crash-after-step 5");
  EXPECT_EQ(crashed.code, 137) << crashed.out;
  const CliRun resumed = run_cli(train_args(amp_b) + " -c " + cfg + " --resume");
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  // ... and the resume says so.
  EXPECT_NE(resumed.out.find("loop.amp_cpu: false given, true kept"), std::string::npos) << resumed.out;
  const auto lb = step_losses(amp_b + "/metrics.jsonl");
  ASSERT_EQ(lb.size(), 8u);
  for (const auto& [step, loss] : la)
    EXPECT_NEAR(lb.at(step), loss, 1e-5 * std::max(1.0, std::abs(loss))) << "step " << step;
}

TEST_F(E2E, NonFiniteLossStopsNamingTheBatchAndKeepsTheCheckpoint) {
  const std::string out = tmp("run_nan");
  const CliRun r = run_cli("--log-level warn train -d " + world_ + "/mimic-cxr-jpg -o " + out +
                           " -b 8 --lr 1e30 --clip 0 --checkpoint-every 1 --max-steps 20 --no-validate");
  ASSERT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("non-finite loss"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("samples "), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(out + "/checkpoints/latest.txt"));
}

TEST_F(E2E, BadInputsAreClearErrors) {
  const CliRun missing = run_cli("train -d /nonexistent/mimic -o " + tmp("run_missing"));
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.out.find("/nonexistent/mimic"), std::string::npos) << missing.out;
  const std::string cfg = tmp("bad_cfg") + ".json";
  std::ofstream(cfg) << R"({"optim": {"lr": -1}})";
  const CliRun bad = run_cli("train -c " + cfg + " -d " + world_ + "/mimic-cxr-jpg");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("optim.lr"), std::string::npos) << bad.out;
  const CliRun no_data = run_cli("train -o " + tmp("run_none"));
  EXPECT_EQ(no_data.code, 1);
  EXPECT_NE(no_data.out.find("--data"), std::string::npos) << no_data.out;
}

// MIMIC-CXR-JPG ships images and CSVs, MIMIC-CXR the reports, each in a files/ tree of its own: the
// world split that way trains with --reports naming the second, and without it every pair is a
// counted "missing report".
TEST_F(E2E, MimicReportsInTheirOwnFolder) {
  const std::string jpg = tmp("split_jpg"), reports = tmp("split_reports"), run = tmp("run_split"), src = world_ + "/mimic-cxr-jpg";
  int moved = 0;
  for (const auto& e : fs::recursive_directory_iterator(src)) {
    if (!e.is_regular_file()) continue;
    const fs::path rel = fs::relative(e.path(), src);
    const fs::path to = (e.path().extension() == ".txt" ? fs::path(reports) : fs::path(jpg)) / rel;
    fs::create_directories(to.parent_path());
    fs::copy_file(e.path(), to);
    moved += e.path().extension() == ".txt";
  }
  ASSERT_GT(moved, 40);
  const CliRun with = run_cli("--log-level warn train -d " + jpg + " --reports " + reports + " -o " + run +
                              " -b 8 --max-steps 1 --json");
  ASSERT_EQ(with.code, 0) << with.out;
  const auto j = nlohmann::json::parse(with.out.substr(with.out.find('{')));
  EXPECT_EQ(j["train_samples"], 40);
  EXPECT_EQ(nlohmann::json::parse(read(run + "/run.json"))["data"]["reports"], reports);
  const CliRun without = run_cli("train -d " + jpg + " -o " + tmp("run_split_none") + " -b 8 --max-steps 1");
  EXPECT_EQ(without.code, 1);
  EXPECT_NE(without.out.find("40 missing report"), std::string::npos) << without.out;
}

// `afloc prepare` with a run config, then `afloc train` with the same config and the prepared
// manifest: the same pairs, losses and weights as training on the MIMIC tree itself.
TEST_F(E2E, PreparedManifestTrainsAsTheMimicTree) {
  const std::string cfg = tmp("prep_cfg.json"), prepared = tmp("prepared"), ra = tmp("run_tree"), rb = tmp("run_prepared");
  std::ofstream(cfg) << R"({"data": {"root": ")" << world_ << R"(/mimic-cxr-jpg"}, "loop": {"batch_size": 8}})";
  const CliRun p = run_cli("--log-level warn prepare -c " + cfg + " -o " + prepared + " --json");
  ASSERT_EQ(p.code, 0) << p.out;
  const auto pj = nlohmann::json::parse(p.out);
  EXPECT_EQ(pj["pairs"]["train"], 40);
  EXPECT_EQ(pj["pairs"]["validate"], 8);
  EXPECT_EQ(pj["size"], 128);  // the tiny preset's image_size
  EXPECT_EQ(pj["written"], 48);
  EXPECT_EQ(pj["labelled"], 48);  // every study is in the world's chexpert CSV
  EXPECT_EQ(data::read_gray8(prepared + "/" + data::read_csv(prepared + "/manifest.csv").at(0, 1)).width, 128);
  const std::string common = " --max-steps 3 --log-every 1 --json -w 2";
  const CliRun a = run_cli("--log-level warn train -c " + cfg + " -o " + ra + common);
  const CliRun b = run_cli("--log-level warn train -c " + cfg + " -m " + prepared + "/manifest.csv -o " + rb + common);
  ASSERT_EQ(a.code, 0) << a.out;
  ASSERT_EQ(b.code, 0) << b.out;
  const auto ja = nlohmann::json::parse(a.out.substr(a.out.find('{'))), jb = nlohmann::json::parse(b.out.substr(b.out.find('{')));
  EXPECT_EQ(jb["train_samples"], 40);
  EXPECT_EQ(jb["val_samples"], 8);
  EXPECT_EQ(ja["parameter_checksum"], jb["parameter_checksum"]);
  EXPECT_EQ(ja["val_loss"], jb["val_loss"]);
  const auto la = step_losses(ra + "/metrics.jsonl"), lb = step_losses(rb + "/metrics.jsonl");
  EXPECT_EQ(la.size(), 3u);
  EXPECT_EQ(la, lb);
  // Each run draws its curves at its checkpoints; `afloc curves` draws both in one PNG.
  EXPECT_EQ(data::read_gray8(ra + "/curves.png").width, 1100);
  const std::string both = tmp("curves_both.png");
  const CliRun cu = run_cli("--log-level warn curves " + ra + " " + rb + "/metrics.jsonl -o " + both);
  ASSERT_EQ(cu.code, 0) << cu.out;
  EXPECT_NE(cu.out.find("curves of 2 run(s)"), std::string::npos) << cu.out;
  EXPECT_EQ(data::read_gray8(both).height, 420);
  const CliRun nocu = run_cli("curves " + tmp("no_run") + " -o " + tmp("x.png"));
  EXPECT_EQ(nocu.code, 1);
  EXPECT_NE(nocu.out.find("metrics.jsonl"), std::string::npos) << nocu.out;
  EXPECT_EQ(nlohmann::json::parse(read(rb + "/run.json"))["data"]["root"], "");  // the manifest's folder, not the config's MIMIC root

  // Same-label negatives left out (loop.drop_same_labels): the prepared manifest carries the chexpert
  // labels in its labels column and trains as the tree does; dropping negatives lowers the first step's
  // loss (same weights, same batch, fewer terms in each softmax).
  const data::CsvTable pm = data::read_csv(prepared + "/manifest.csv");
  EXPECT_EQ(pm.column("labels"), 4u);
  const std::string rd = tmp("run_drop_tree"), re = tmp("run_drop_prepared");
  const CliRun d1 = run_cli("train -c " + cfg + " -o " + rd + common + " --drop-same-labels");
  const CliRun d2 =
      run_cli("--log-level warn train -c " + cfg + " -m " + prepared + "/manifest.csv -o " + re + common + " --drop-same-labels");
  ASSERT_EQ(d1.code, 0) << d1.out;
  ASSERT_EQ(d2.code, 0) << d2.out;
  EXPECT_NE(d1.out.find("drop_same_labels: 40 of 40 training pairs labelled"), std::string::npos) << d1.out;
  const auto ld = step_losses(rd + "/metrics.jsonl");
  EXPECT_EQ(ld, step_losses(re + "/metrics.jsonl"));
  ASSERT_EQ(ld.size(), 3u);
  EXPECT_LT(ld.begin()->second, la.begin()->second);  // step 1
  EXPECT_EQ(nlohmann::json::parse(read(rd + "/run.json"))["loop"]["drop_same_labels"], true);
  // Without labels it is an error that says where labels come from, not a silent no-op.
  const std::string bare = tmp("bare_manifest.csv");
  {
    std::string text = data::csv_row({"image", "report", "split"});
    for (size_t r = 0; r < pm.rows.size(); ++r)
      text += data::csv_row({prepared + "/" + pm.at(r, 1), pm.at(r, 2), pm.at(r, 3)});
    std::ofstream(bare) << text;
  }
  const CliRun nolab = run_cli("train -c " + cfg + " -m " + bare + " -o " + tmp("run_nolab") + common + " --drop-same-labels");
  EXPECT_EQ(nolab.code, 1) << nolab.out;
  EXPECT_NE(nolab.out.find("no labels column"), std::string::npos) << nolab.out;
  const std::string badlab = tmp("badlab.json");
  std::ofstream(badlab) << R"({"data": {"root": ")" << world_ << R"(/mimic-cxr-jpg", "labels": ")" << bare
                        << R"("}, "loop": {"batch_size": 8, "drop_same_labels": true}})";
  const CliRun nostudy = run_cli("train -c " + badlab + " -o " + tmp("run_badlab") + common);
  EXPECT_EQ(nostudy.code, 1) << nostudy.out;
  EXPECT_NE(nostudy.out.find("study_id"), std::string::npos) << nostudy.out;
  EXPECT_NE(nostudy.out.find(bare), std::string::npos) << nostudy.out;

  // A run begun on the tree resumes on the prepared manifest (its loader waited on the films) and
  // goes on as if it had never switched.
  const std::string rc = tmp("run_switch");
  ASSERT_EQ(run_cli("--log-level warn train -c " + cfg + " -o " + rc + " --max-steps 2 --log-every 1 -w 2").code, 0);
  const CliRun c = run_cli("--log-level warn train -c " + cfg + " -m " + prepared + "/manifest.csv -o " + rc +
                           " --resume --max-steps 3 --log-every 1 --json -w 2");
  ASSERT_EQ(c.code, 0) << c.out;
  EXPECT_EQ(c.out.find("not applied"), std::string::npos) << c.out;
  const auto jc = nlohmann::json::parse(c.out.substr(c.out.find('{')));
  EXPECT_EQ(jc["parameter_checksum"], ja["parameter_checksum"]);
  EXPECT_EQ(step_losses(rc + "/metrics.jsonl"), la);
  const auto data_c = nlohmann::json::parse(read(rc + "/run.json"))["data"];
  EXPECT_EQ(data_c["format"], "manifest");
  EXPECT_EQ(data_c["root"], "");

  // The same folder again at another size is refused, naming both sizes; without data, an error.
  const CliRun other = run_cli("--log-level warn prepare -c " + cfg + " -o " + prepared + " --size 64");
  EXPECT_EQ(other.code, 1);
  EXPECT_NE(other.out.find("size 128, not 64"), std::string::npos) << other.out;
  const CliRun none = run_cli("prepare -o " + tmp("prepared_none"));
  EXPECT_EQ(none.code, 1);
  EXPECT_NE(none.out.find("--data"), std::string::npos) << none.out;

  // Initial weights bring their model's input size, as `afloc train --init` takes their config: the
  // tiny run's 128, not the paper preset's 224 that the config names.
  const std::string init_cfg = tmp("prep_init.json");
  std::ofstream(init_cfg) << R"({"model": {"preset": "paper"}, "init": ")" << ra << R"(", "data": {"root": ")" << world_
                          << R"(/mimic-cxr-jpg", "train_splits": ["validate"], "val_splits": []}})";
  const CliRun pi = run_cli("--log-level warn prepare -c " + init_cfg + " -o " + tmp("prepared_init") + " --json");
  ASSERT_EQ(pi.code, 0) << pi.out;
  const auto pij = nlohmann::json::parse(pi.out);
  EXPECT_EQ(pij["size"], 128);
  EXPECT_EQ(pij["pairs"]["validate"], 8);
}

TEST_F(E2E, EvaluatePhantomWritesTablesAndOverlays) {
  const std::string run = tmp("run_eval"), ev = tmp("eval");
  ASSERT_EQ(run_cli("--log-level warn train -d " + world_ + "/mimic-cxr-jpg -o " + run + " -b 8 --max-steps 2 --no-validate").code, 0);
  const CliRun r = run_cli("--log-level warn eval-phantom -r " + run + " -w " + world_ + " -o " + ev + " --overlays 4 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["macro"]["n"].get<int64_t>(), 0);
  // No map beats the pointing-game ceiling of its resolution (the tiny model's 10x10 map).
  EXPECT_EQ(j["map_side"].get<int64_t>(), 10);
  for (const auto& [cat, c] : j["categories"].items())
    EXPECT_LE(c["hit_rate"].get<double>(), c["hit_ceiling"].get<double>()) << cat;
  // cases.csv: a hit is a peak distance of 0, a miss a positive one within the 224-px square.
  const data::CsvTable cases = data::read_csv(ev + "/cases.csv");
  const size_t hit = cases.column("hit"), px = cases.column("peak_x"), py = cases.column("peak_y"),
               dist = cases.column("peak_distance_px");
  for (size_t r = 0; r < cases.rows.size(); ++r) {
    const double d = std::stod(cases.at(r, dist));
    for (const size_t k : {px, py}) {
      EXPECT_GE(std::stoi(cases.at(r, k)), 0) << "row " << r;
      EXPECT_LT(std::stoi(cases.at(r, k)), 224) << "row " << r;
    }
    EXPECT_EQ(cases.at(r, hit) == "1", d == 0.0) << "row " << r;
    EXPECT_GE(d, 0.0);
    EXPECT_LT(d, 224 * 1.5) << "row " << r;
  }
  EXPECT_EQ(cases.rows.size(), j["macro"]["n"].get<size_t>());
  EXPECT_EQ(j["truth"], "masks");
  // --truth boxes scores the same heatmaps against the findings' boxes as MS-CXR is scored
  // (check_box_cases: the world's MS-CXR CSV, 96-px films mapped into the 224-px square).
  const std::string eb = tmp("eval_boxes");
  const CliRun rb = run_cli("--log-level warn eval-phantom -r " + run + " -w " + world_ + " -o " + eb +
                            " --truth boxes --overlays 2 --bootstrap 0 --no-classify --json");
  ASSERT_EQ(rb.code, 0) << rb.out;
  EXPECT_EQ(nlohmann::json::parse(rb.out)["truth"], "boxes");
  EXPECT_NE(read(eb + "/table.txt").find("ground truth: each finding's boxes"), std::string::npos);
  // This two-step model misses every box; test_learn's trained one makes the same checks with hits.
  check_box_cases(world_, eb + "/cases.csv", ev + "/cases.csv", /*mask_within_box=*/false);
  // SPEC §5's bootstrap intervals (1000 resamples by default) hold their point estimates, for the
  // macro row, each category and the macro IoU over the prior's; table.txt states the macro row's.
  EXPECT_EQ(j["bootstrap"]["replicates"].get<int64_t>(), 1000);
  auto within = [](const nlohmann::json& ci, double v, const std::string& what) {
    ASSERT_TRUE(ci.is_array() && ci.size() == 2 && ci[0].is_number() && ci[1].is_number()) << what << ": " << ci.dump();
    EXPECT_LE(ci[0].get<double>(), v + 1e-12) << what;
    EXPECT_GE(ci[1].get<double>(), v - 1e-12) << what;
  };
  for (const char* metric : {"hit_rate", "iou", "cnr"}) {
    within(j["macro"]["ci95"][metric], j["macro"][metric].get<double>(), std::string("macro ") + metric);
    for (const auto& [cat, c] : j["categories"].items()) within(c["ci95"][metric], c[metric].get<double>(), cat + " " + metric);
  }
  within(j["macro"]["ci95"]["iou_over_baseline"], j["macro"]["iou"].get<double>() / j["macro"]["baseline_iou"].get<double>(),
         "IoU over baseline");
  EXPECT_NE(read(ev + "/table.txt").find("95% CI of the macro row (1000 bootstrap resamples"), std::string::npos);
  EXPECT_TRUE(fs::exists(ev + "/table.txt"));
  EXPECT_TRUE(fs::exists(ev + "/overlays/sheet.png"));
  int pngs = 0;
  for (const auto& e : fs::directory_iterator(ev + "/overlays")) pngs += e.path().extension() == ".png";
  EXPECT_EQ(pngs, 5);  // four overlays and the sheet
  // The world's MIMIC-CXR-JPG layout read as a user's MIMIC-CXR: `classify --mimic` takes the test
  // split's films and labels them from mimic-cxr-2.0.0-chexpert.csv by study (0.0 and blank = absent). Its
  // AUROCs are eval-phantom's, which labels the same films from the hidden ground truth.
  const std::string cm = tmp("cls_mimic");
  const CliRun mimic = run_cli("classify -M " + run + " --mimic " + world_ + "/mimic-cxr-jpg --bank chexpert5 -o " + cm);
  ASSERT_EQ(mimic.code, 0) << mimic.out;
  EXPECT_NE(mimic.out.find("12 images of split 'test'"), std::string::npos) << mimic.out;
  EXPECT_NE(mimic.out.find("mimic-cxr-2.0.0-chexpert.csv"), std::string::npos) << mimic.out;
  const auto mm = nlohmann::json::parse(read(cm + "/metrics.json"));
  ASSERT_EQ(mm["classes"].size(), 5u);
  for (const auto& c : mm["classes"]) {
    const auto& want = j["classification"]["classes"][c["class"].get<std::string>()];
    EXPECT_EQ(c["n_pos"], want["n_pos"]) << c.dump();
    EXPECT_EQ(c["n_neg"], want["n_neg"]) << c.dump();
    if (want["auroc"].is_number()) {
      EXPECT_NEAR(c["auroc"].get<double>(), want["auroc"].get<double>(), 1e-6) << c.dump();
    }
  }
  const CliRun val = run_cli("--log-level warn classify -M " + run + " --mimic " + world_ +
                             "/mimic-cxr-jpg --split validate --views all --bank chexpert5 -o " + tmp("cls_mimic_val"));
  ASSERT_EQ(val.code, 0) << val.out;
  EXPECT_NE(val.out.find("classified 8 images"), std::string::npos) << val.out;
  const CliRun alone = run_cli("classify -M " + run + " --split validate " + world_ + " -o " + tmp("cls_mimic_none"));
  EXPECT_EQ(alone.code, 2) << alone.out;  // --split means nothing without --mimic: a usage error
  EXPECT_NE(alone.out.find("--mimic"), std::string::npos) << alone.out;
  const CliRun none = run_cli("classify -M " + run + " --mimic " + world_ + "/mimic-cxr-jpg --split nosuch -o " + tmp("cls_mimic_none"));
  EXPECT_EQ(none.code, 1);
  EXPECT_NE(none.out.find("no image of split 'nosuch'"), std::string::npos) << none.out;
  // --dense-map: the same model read at twice the map side; the pointing-game ceiling rises (the
  // pixels an arg-max can land on are twice as dense), and diagnosis, which reads v_g only, is
  // unchanged.
  const CliRun d = run_cli("--log-level warn eval-phantom -r " + run + " -w " + world_ + " -o " + tmp("eval_dense") +
                           " --overlays 0 --json --dense-map --bootstrap 0");
  ASSERT_EQ(d.code, 0) << d.out;
  const auto jd = nlohmann::json::parse(d.out);
  EXPECT_EQ(jd["map_side"].get<int64_t>(), 20);
  EXPECT_TRUE(jd["dense_map"].get<bool>());
  EXPECT_FALSE(jd.contains("bootstrap"));  // --bootstrap 0: no intervals
  EXPECT_FALSE(jd["macro"].contains("ci95"));
  EXPECT_FALSE(j["dense_map"].get<bool>());
  EXPECT_GT(jd["macro"]["hit_ceiling"].get<double>(), j["macro"]["hit_ceiling"].get<double>());
  for (const auto& [cat, c] : jd["categories"].items())
    EXPECT_LE(c["hit_rate"].get<double>(), c["hit_ceiling"].get<double>()) << cat;
  ASSERT_TRUE(j.contains("classification"));
  EXPECT_EQ(jd["classification"].dump(), j["classification"].dump());
  // --levels: the model's default reads deep; "both" averages in the shallow map, so the maps
  // change, no single ceiling is reported, and diagnosis (v_g) is unchanged. A bad level is a
  // usage error naming the choices.
  EXPECT_EQ(j["heatmap_levels"].get<std::string>(), "deep");
  const std::string el = tmp("eval_levels");
  const CliRun lv = run_cli("--log-level warn eval-phantom -r " + run + " -w " + world_ + " -o " + el +
                            " --overlays 0 --json --levels both --bootstrap 0");
  ASSERT_EQ(lv.code, 0) << lv.out;
  const auto jl = nlohmann::json::parse(lv.out);
  EXPECT_EQ(jl["heatmap_levels"].get<std::string>(), "both");
  EXPECT_TRUE(jl["map_side"].is_null());
  EXPECT_NE(jl["macro"]["iou"].get<double>(), j["macro"]["iou"].get<double>());
  EXPECT_EQ(jl["classification"].dump(), j["classification"].dump());
  EXPECT_NE(read(el + "/table.txt").find("maps read: both"), std::string::npos);
  const CliRun badlv = run_cli("--log-level warn eval-phantom -r " + run + " -w " + world_ + " -o " + tmp("eval_levels_bad") +
                               " --levels all");
  EXPECT_EQ(badlv.code, 2);
  EXPECT_NE(badlv.out.find("--levels"), std::string::npos) << badlv.out;
  // --contrast: each finding's map against the mean over the evaluated findings' prompts. Its
  // arg-max per case is that of localize --contrast given the same findings. A prompt without
  // {finding} (the same prompt for all, so a zero contrast) is an error.
  const std::string ec = tmp("eval_contrast");
  const CliRun cr = run_cli("--log-level warn eval-phantom -r " + run + " -w " + world_ + " -o " + ec +
                            " --overlays 0 --json --contrast 0.5 --bootstrap 0 --no-classify");
  ASSERT_EQ(cr.code, 0) << cr.out;
  const auto jc = nlohmann::json::parse(cr.out);
  ASSERT_GE(j["categories"].size(), 2u);
  EXPECT_EQ(jc["contrast_references"].get<size_t>(), j["categories"].size());
  EXPECT_EQ(jc["contrast"].get<double>(), 0.5);
  EXPECT_EQ(j["contrast"].get<double>(), 0.0);
  EXPECT_NE(read(ec + "/table.txt").find("contrast reading (--contrast 0.5)"), std::string::npos);
  EXPECT_NE(jc["macro"].dump(), j["macro"].dump());
  const data::CsvTable cc = data::read_csv(ec + "/cases.csv");
  ASSERT_GT(cc.rows.size(), 0u);
  const auto image_of = image_files(world_);
  std::string findings;
  for (const auto& [cat, c] : j["categories"].items()) findings += " -f \"" + cat + "\"";
  const std::string loc = tmp("contrast_loc"), cat0 = cc.at(0, cc.column("category"));
  const CliRun lr = run_cli("--log-level warn localize -M " + run + findings + " --contrast 0.5 " +
                            image_of.at(cc.at(0, cc.column("id"))) + " --no-npy --no-masks -o " + loc);
  ASSERT_EQ(lr.code, 0) << lr.out;
  std::istringstream recs(read(loc + "/results.jsonl"));
  int matched = 0;
  for (std::string line; std::getline(recs, line);) {
    const auto rec = nlohmann::json::parse(line);
    if (rec["prompt"].get<std::string>() != eval::prompt_for("Findings suggesting {finding}.", cat0)) continue;
    EXPECT_EQ(rec["options"]["contrast"].get<double>(), 0.5);
    EXPECT_EQ(rec["peak"]["x"].get<int64_t>(), std::stoll(cc.at(0, cc.column("peak_x"))));
    EXPECT_EQ(rec["peak"]["y"].get<int64_t>(), std::stoll(cc.at(0, cc.column("peak_y"))));
    ++matched;
  }
  EXPECT_EQ(matched, 1);
  const CliRun bad = run_cli("--log-level warn eval-phantom -r " + run + " -w " + world_ + " -o " + tmp("eval_contrast_bad") +
                             " --contrast 1 --prompt \"Findings.\" --overlays 0 --bootstrap 0 --no-classify");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("has no {finding}"), std::string::npos) << bad.out;
  // --centre: every map against its mean over the world's first N training films, which
  // eval-phantom lists; localize --centre with that list reads the same maps (the same peak).
  const std::string en = tmp("eval_centre");
  const CliRun cn = run_cli("--log-level warn eval-phantom -r " + run + " -w " + world_ + " -o " + en +
                            " --overlays 0 --json --centre 0.5 --centre-n 12 --bootstrap 0 --no-classify");
  ASSERT_EQ(cn.code, 0) << cn.out;
  const auto jn = nlohmann::json::parse(cn.out);
  EXPECT_EQ(jn["centre"].get<double>(), 0.5);
  EXPECT_EQ(jn["centre_films"].get<int64_t>(), 12);
  EXPECT_EQ(j["centre_films"].get<int64_t>(), 0);
  EXPECT_NE(jn["macro"].dump(), j["macro"].dump());
  EXPECT_NE(read(en + "/table.txt").find("centred reading (--centre 0.5): each map minus 0.5 x its mean over 12 reference films"),
            std::string::npos);
  std::istringstream listed(read(en + "/centre_films.txt"));
  int n_listed = 0;
  for (std::string line; std::getline(listed, line); ++n_listed) {
    EXPECT_TRUE(fs::exists(line)) << line;
    EXPECT_NE(line.find("mimic-cxr-jpg"), std::string::npos) << line;
  }
  EXPECT_EQ(n_listed, 12);
  const data::CsvTable cn_cases = data::read_csv(en + "/cases.csv");
  ASSERT_GT(cn_cases.rows.size(), 0u);
  const std::string cloc = tmp("centre_loc"), ccat = cn_cases.at(0, cn_cases.column("category"));
  const CliRun clr = run_cli("--log-level warn localize -M " + run + " -f \"" + ccat + "\" --centre 0.5 --centre-films " + en +
                             "/centre_films.txt " + image_of.at(cn_cases.at(0, cn_cases.column("id"))) +
                             " --no-npy --no-masks -o " + cloc);
  ASSERT_EQ(clr.code, 0) << clr.out;
  const auto crec = nlohmann::json::parse(read(cloc + "/results.jsonl").substr(0, read(cloc + "/results.jsonl").find('\n')));
  EXPECT_EQ(crec["options"]["centre"].get<double>(), 0.5);
  EXPECT_EQ(crec["peak"]["x"].get<int64_t>(), std::stoll(cn_cases.at(0, cn_cases.column("peak_x"))));
  EXPECT_EQ(crec["peak"]["y"].get<int64_t>(), std::stoll(cn_cases.at(0, cn_cases.column("peak_y"))));
  // Other reference films change every map, so --resume refuses them (options.json names them).
  const CliRun other = run_cli("--log-level warn localize -M " + run + " -f \"" + ccat + "\" --centre 0.5 --centre-films " + en +
                               "/centre_films.txt --centre-n 5 " + image_of.at(cn_cases.at(0, cn_cases.column("id"))) +
                               " --no-npy --no-masks --resume -o " + cloc);
  EXPECT_EQ(other.code, 1);
  EXPECT_NE(other.out.find("centre_films"), std::string::npos) << other.out;
  // Without reference films, or films without a weight: errors saying what is missing.
  const CliRun nofilms = run_cli("--log-level warn localize -M " + run + " -f \"" + ccat + "\" --centre 0.5 " +
                                 image_of.at(cn_cases.at(0, cn_cases.column("id"))) + " -o " + tmp("centre_bad"));
  EXPECT_EQ(nofilms.code, 1);
  EXPECT_NE(nofilms.out.find("--centre needs --centre-films"), std::string::npos) << nofilms.out;
}

// Ensembles (-M repeated): the models' normalised heatmaps and probabilities averaged. A model with
// itself reproduces the single model; two models of different seeds give, per film and class, the
// mean of their probabilities; models of different map sides are an error naming them.
TEST_F(E2E, EvaluatePhantomAveragesAnEnsemble) {
  const std::string a = tmp("run_ens_a"), b = tmp("run_ens_b");
  const std::string ea = tmp("ens_a"), eb = tmp("ens_b"), eaa = tmp("ens_aa"), eab = tmp("ens_ab");
  for (const auto& [run, seed] : {std::pair<std::string, int>{a, 0}, {b, 1}})
    ASSERT_EQ(run_cli("--log-level warn train -d " + world_ + "/mimic-cxr-jpg -o " + run + " -b 8 --max-steps 2 --no-validate -s " +
                      std::to_string(seed)).code, 0);
  auto eval = [&](const std::string& models, const std::string& out) {
    const CliRun r = run_cli("--log-level warn eval-phantom " + models + " -w " + world_ + " -o " + out + " --overlays 0 --bootstrap 0 --json");
    EXPECT_EQ(r.code, 0) << r.out;
    return r.code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json();
  };
  const auto ja = eval("-M " + a, ea), jb = eval("-M " + b, eb);
  const auto jaa = eval("-M " + a + " -r " + a, eaa), jab = eval("-M " + a + " -M " + b, eab);
  ASSERT_FALSE(ja.is_null() || jb.is_null() || jaa.is_null() || jab.is_null());
  EXPECT_EQ(ja["models"].get<int64_t>(), 1);
  EXPECT_EQ(jab["models"].get<int64_t>(), 2);
  EXPECT_EQ(jaa["macro"].dump(), ja["macro"].dump());
  EXPECT_EQ(jaa["categories"].dump(), ja["categories"].dump());
  EXPECT_NE(read(eab + "/table.txt").find("averaged over 2 models"), std::string::npos);
  const data::CsvTable pa = data::read_csv(ea + "/classification.csv"), pb = data::read_csv(eb + "/classification.csv"),
                       pab = data::read_csv(eab + "/classification.csv");
  ASSERT_EQ(pab.rows.size(), pa.rows.size());
  ASSERT_GT(pab.rows.size(), 0u);
  double max_diff = 0, max_gap = 0;
  for (size_t r = 0; r < pab.rows.size(); ++r)
    for (size_t c = 0; c < pab.header.size(); ++c) {
      if (pab.header[c].rfind("p:", 0) != 0) continue;
      const double x = std::stod(pa.at(r, c)), y = std::stod(pb.at(r, c)), m = std::stod(pab.at(r, c));
      max_diff = std::max(max_diff, std::abs(m - 0.5 * (x + y)));
      max_gap = std::max(max_gap, std::abs(x - y));
    }
  EXPECT_LT(max_diff, 2e-6);  // classification.csv holds 6 decimals
  EXPECT_GT(max_gap, 1e-3);   // the two seeds' models do differ
  // A model with another deep-map side (128-px input: 8x8) joins the average at the evaluation
  // size; the pointing game then has no single ceiling. Its arg-max per case is localize's.
  const std::string c = tmp("run_ens_c"), cfg = tmp("ens_small.json"), eac = tmp("ens_ac");
  std::ofstream(cfg) << R"({"preset": "tiny", "image_size": 128, "upsample_size": 0})";
  ASSERT_EQ(run_cli("--log-level warn train --model-config " + cfg + " -d " + world_ + "/mimic-cxr-jpg -o " + c +
                    " -b 8 --max-steps 1 --no-validate").code, 0);
  const auto jac = eval("-M " + a + " -M " + c + " --no-classify", eac);
  ASSERT_FALSE(jac.is_null());
  EXPECT_TRUE(jac["map_side"].is_null());
  EXPECT_TRUE(jac["macro"]["hit_ceiling"].is_null());
  EXPECT_EQ(jac["models"].get<int64_t>(), 2);
  EXPECT_NE(read(eac + "/table.txt").find("ceiling: none"), std::string::npos);
  EXPECT_NE(jac["macro"].dump(), ja["macro"].dump());
  const data::CsvTable cases = data::read_csv(eac + "/cases.csv");
  ASSERT_GT(cases.rows.size(), 0u);
  const auto image_of = image_files(world_);
  const size_t id = cases.column("id"), cat = cases.column("category"), px = cases.column("peak_x"), py = cases.column("peak_y");
  const std::string loc = tmp("ens_ac_loc");
  const CliRun lr = run_cli("--log-level warn localize -M " + a + " -M " + c + " -f \"" + cases.at(0, cat) + "\" " +
                            image_of.at(cases.at(0, id)) + " --no-npy --no-masks -o " + loc);
  ASSERT_EQ(lr.code, 0) << lr.out;
  const auto rec = nlohmann::json::parse(read(loc + "/results.jsonl"));
  EXPECT_EQ(rec["peak"]["x"].get<int64_t>(), std::stoll(cases.at(0, px)));
  EXPECT_EQ(rec["peak"]["y"].get<int64_t>(), std::stoll(cases.at(0, py)));
  EXPECT_EQ(cases.at(0, cases.column("hit_ceiling")), "");
}

nlohmann::json last_json(const std::string& out) {
  const size_t at = out.rfind("\n{");
  return nlohmann::json::parse(out.substr(at == std::string::npos ? out.find('{') : at + 1));
}

// Two ranks on 127.0.0.1 through the launcher's environment variables.
std::pair<CliRun, CliRun> run_two_ranks(const std::string& args) {
  const int port = 20000 + static_cast<int>(::getpid() % 20000);
  const std::string env = "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " WORLD_SIZE=2 ";
  CliRun r1{};
  std::thread t([&] { r1 = run_cli_env(env + "RANK=1 LOCAL_RANK=1", args); });
  const CliRun r0 = run_cli_env(env + "RANK=0 LOCAL_RANK=0", args);
  t.join();
  return {r0, r1};
}

TEST_F(E2E, TwoProcessesStayInStepAndWithGatheringMatchOneProcess) {
  // No dropout and frozen BatchNorm: then the global batch's loss does not depend on how it is split.
  // skip_negated: the sentences' negation flags must travel with the gathered embeddings.
  const std::string cfg = tmp("dist_cfg") + ".json";
  std::ofstream(cfg) << R"({"model": {"preset": "tiny", "bert": {"hidden_dropout": 0.0, "attention_dropout": 0.0},
                             "loss": {"skip_negated": true}},
    "loop": {"freeze_batchnorm": true, "log_every": 1, "max_steps": 4, "validate": false, "epochs": 1,
             "checkpoint_every": 0}})";
  const std::string d2 = tmp("dist2"), d1 = tmp("dist1"), dn = tmp("dist_nogather");
  const std::string base = "--log-level warn train -c " + cfg + " -d " + world_ + "/mimic-cxr-jpg --json ";
  auto [a0, a1] = run_two_ranks(base + "-b 4 --gather -o " + d2);
  ASSERT_EQ(a0.code, 0) << a0.out;
  ASSERT_EQ(a1.code, 0) << a1.out;
  const auto j0 = last_json(a0.out), j1 = last_json(a1.out);
  EXPECT_EQ(j0["world"], 2);
  EXPECT_EQ(j1["rank"], 1);
  EXPECT_EQ(j0["parameter_checksum"].get<double>(), j1["parameter_checksum"].get<double>()) << "replicas diverged";

  const CliRun single = run_cli(base + "-b 8 -o " + d1);
  ASSERT_EQ(single.code, 0) << single.out;
  const auto l2 = step_losses(d2 + "/metrics.jsonl"), l1 = step_losses(d1 + "/metrics.jsonl");
  ASSERT_EQ(l2.size(), 4u);
  ASSERT_EQ(l1.size(), 4u);
  for (const auto& [step, loss] : l1) EXPECT_NEAR(l2.at(step), loss, 1e-4 * std::abs(loss)) << "step " << step;
  // Weights after 4 Adam steps (lr 2e-5): equal up to sign flips of near-zero gradients (<= 2 lr per step).
  const auto w2 = io::load_tensor_file(d2 + "/checkpoints/final/model.pt");
  const auto w1 = io::load_tensor_file(d1 + "/checkpoints/final/model.pt");
  ASSERT_EQ(w1.size(), w2.size());
  double worst = 0;
  for (const auto& [k, t] : w1) {
    if (!t.is_floating_point()) continue;
    worst = std::max(worst, (t.to(torch::kDouble) - w2.at(k).to(torch::kDouble)).abs().max().item<double>());
  }
  std::printf("[e2e] 2 ranks with gathering vs 1 process: max |weight diff| %.3g after 4 steps\n", worst);
  EXPECT_LE(worst, 4 * 2 * 2e-5 + 1e-6);

  // Same-label negatives left out over the gathered batch: the ranks gather each other's label keys,
  // so two ranks still give one process's losses, which differ from the losses without the option.
  const std::string dd2 = tmp("dist2_drop"), dd1 = tmp("dist1_drop");
  auto [c0, c1] = run_two_ranks(base + "-b 4 --gather --drop-same-labels -o " + dd2);
  ASSERT_EQ(c0.code, 0) << c0.out;
  ASSERT_EQ(c1.code, 0) << c1.out;
  ASSERT_EQ(run_cli(base + "-b 8 --drop-same-labels -o " + dd1).code, 0);
  const auto ld2 = step_losses(dd2 + "/metrics.jsonl"), ld1 = step_losses(dd1 + "/metrics.jsonl");
  ASSERT_EQ(ld1.size(), 4u);
  ASSERT_EQ(ld2.size(), 4u);
  for (const auto& [step, loss] : ld1) EXPECT_NEAR(ld2.at(step), loss, 1e-4 * std::abs(loss)) << "step " << step;
  EXPECT_LT(ld1.at(1), l1.at(1));

  // Without gathering (gradient averaging, negatives from the local batch) the replicas still agree.
  auto [b0, b1] = run_two_ranks(base + "-b 4 -o " + dn);
  ASSERT_EQ(b0.code, 0) << b0.out;
  ASSERT_EQ(b1.code, 0) << b1.out;
  EXPECT_EQ(last_json(b0.out)["parameter_checksum"].get<double>(), last_json(b1.out)["parameter_checksum"].get<double>());
}

TEST_F(E2E, ImportLightningCheckpointAndModelDirectoriesRoundTrip) {
  // A model trained here, wrapped by Python into the authors' Lightning layout (foreign classes
  // included), imported back without Python: the weights must come out identical.
  const std::string run = tmp("run_import"), ckpt = tmp("lightning") + ".ckpt", dir = tmp("imported"), dir2 = tmp("exported");
  ASSERT_EQ(run_cli("--log-level warn train -d " + world_ + "/mimic-cxr-jpg -o " + run + " -b 8 --max-steps 1 --no-validate").code, 0);
  const std::string py = "/usr/bin/python3 " + std::string(AFLOC_SOURCE_DIR) + "/scripts/make_lightning_checkpoint.py " + run +
                         "/checkpoints/final/model.pt " + ckpt;
  ASSERT_EQ(std::system(py.c_str()), 0) << py;
  const CliRun imp = run_cli("import --lightning " + ckpt + " --vocab " + run + "/checkpoints/final/vocab.txt --model-config " + run +
                             "/checkpoints/final/model.json -o " + dir);
  ASSERT_EQ(imp.code, 0) << imp.out;
  EXPECT_NE(imp.out.find("omegaconf.dictconfig.DictConfig"), std::string::npos) << imp.out;  // reported, not unpickled
  const auto want = io::load_tensor_file(run + "/checkpoints/final/model.pt");
  const CliRun ins = run_cli("inspect --json " + dir + "/model.safetensors");
  ASSERT_EQ(ins.code, 0) << ins.out;
  EXPECT_EQ(nlohmann::json::parse(ins.out)["tensors"].size(), want.size());
  // A model directory or a checkpoint directory names its weights file; another directory is an error.
  const CliRun ins_dir = run_cli("inspect --json " + dir);
  ASSERT_EQ(ins_dir.code, 0) << ins_dir.out;
  EXPECT_EQ(nlohmann::json::parse(ins_dir.out)["file"], dir + "/model.safetensors");
  const CliRun ins_ckpt = run_cli("inspect --json " + run + "/checkpoints/final");
  ASSERT_EQ(ins_ckpt.code, 0) << ins_ckpt.out;
  EXPECT_EQ(nlohmann::json::parse(ins_ckpt.out)["tensors"].size(), want.size());
  const CliRun ins_bad = run_cli("inspect " + run);
  EXPECT_EQ(ins_bad.code, 1);
  EXPECT_NE(ins_bad.out.find("is a directory without model.safetensors or model.pt"), std::string::npos) << ins_bad.out;
  // Model directory -> model directory, and both load for evaluation.
  ASSERT_EQ(run_cli("import --checkpoint " + dir + " -o " + dir2).code, 0);
  const CliRun ev = run_cli("--log-level warn eval-phantom -M " + dir2 + " -w " + world_ + " -o " + tmp("eval_imported") + " --overlays 0 --json");
  ASSERT_EQ(ev.code, 0) << ev.out;
  const CliRun ev0 = run_cli("--log-level warn eval-phantom -M " + run + " -w " + world_ + " -o " + tmp("eval_orig") + " --overlays 0 --json");
  ASSERT_EQ(ev0.code, 0) << ev0.out;
  EXPECT_EQ(nlohmann::json::parse(ev.out)["macro"], nlohmann::json::parse(ev0.out)["macro"]) << "imported weights behave differently";
  // Weights that do not fit the config: an error naming the tensors.
  const CliRun bad = run_cli("import --lightning " + ckpt + " --vocab " + run + "/checkpoints/final/vocab.txt --preset paper -o " + tmp("bad"));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("img_encoder"), std::string::npos) << bad.out;
}

TEST_F(E2E, ImportHuggingFaceBertAndTorchvisionResNet) {
  // Files in the layouts users download (written by torchvision / torch.save here), imported
  // without Python: every tensor lands under the model's names unchanged.
  const std::string run = tmp("run_hf"), files = tmp("hf_files"), out = tmp("hf_model");
  ASSERT_EQ(run_cli("--log-level warn train -d " + world_ + "/mimic-cxr-jpg -o " + run + " -b 8 --max-steps 1 --no-validate").code, 0);
  const std::string ck = run + "/checkpoints/final";
  const std::string py = "/usr/bin/python3 " + std::string(AFLOC_SOURCE_DIR) + "/scripts/make_hf_torchvision.py " + ck +
                         "/model.pt " + ck + "/model.json " + ck + "/vocab.txt " + files;
  ASSERT_EQ(std::system(py.c_str()), 0) << py;
  const std::string cfg = tmp("r18cfg") + ".json";
  std::ofstream(cfg) << R"({"preset": "tiny", "resnet": {"depth": 18, "width": 64}})";
  const CliRun r = run_cli("import --hf-bert " + files + "/bert --torchvision " + files + "/resnet18.pth --model-config " + cfg +
                           " -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto got = io::load_safetensors(out + "/model.safetensors").tensors;
  const auto resnet = io::read_torch_checkpoint(files + "/resnet18.pth").tensors;
  const auto bert = io::read_torch_checkpoint(files + "/bert/pytorch_model.bin").tensors;
  int64_t checked = 0;
  for (const auto& [k, v] : resnet) {
    if (k.rfind("fc.", 0) == 0) continue;
    ASSERT_TRUE(got.count("img_encoder.model." + k)) << k;
    EXPECT_TRUE(torch::equal(got.at("img_encoder.model." + k), v)) << k;
    ++checked;
  }
  for (const auto& [k, v] : bert) {
    if (k.rfind("cls.", 0) == 0) continue;
    const std::string name = "text_encoder.model." + k.substr(5);
    ASSERT_TRUE(got.count(name)) << name;
    EXPECT_TRUE(torch::equal(got.at(name), v)) << name;
    ++checked;
  }
  std::printf("[e2e] import: %lld torchvision + Hugging Face tensors identical\n", static_cast<long long>(checked));
  // The imported directory starts a training run.
  EXPECT_EQ(run_cli("--log-level warn train --init " + out + " -d " + world_ + "/mimic-cxr-jpg -o " + tmp("run_from_init") +
                    " -b 8 --max-steps 1 --no-validate").code, 0);
  // A ResNet of another depth does not fit: an error naming the file.
  const std::string cfg50 = tmp("r50cfg") + ".json";
  std::ofstream(cfg50) << R"({"preset": "tiny", "resnet": {"depth": 34, "width": 64}})";
  const CliRun bad = run_cli("import --torchvision " + files + "/resnet18.pth --vocab " + ck + "/vocab.txt --model-config " + cfg50 +
                             " -o " + tmp("bad_r"));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("resnet18.pth"), std::string::npos) << bad.out;
}

TEST_F(E2E, LocalizeWritesHeatmapsMasksBoxesAndReportsFailures) {
  const std::string run = tmp("run_loc"), out = tmp("loc"), in = tmp("loc_in");
  ASSERT_EQ(run_cli("--log-level warn train -d " + world_ + "/mimic-cxr-jpg -o " + run + " -b 8 --max-steps 1 --no-validate").code, 0);
  fs::create_directories(in);
  int copied = 0;
  for (const auto& e : fs::recursive_directory_iterator(world_ + "/mimic-cxr-jpg/files")) {
    if (e.path().extension() == ".jpg" && copied < 3) fs::copy_file(e.path(), in + "/" + std::to_string(copied++) + ".jpg");
  }
  std::ofstream(in + "/broken.png") << "not an image";
  fs::create_directories(in + "/sub");
  fs::copy_file(in + "/0.jpg", in + "/sub/0.jpg");  // same file stem as in/0.jpg: its own folder
  std::ofstream(tmp("prompts") + ".json") << R"(["Findings suggesting pleural effusion.", "Small right pneumothorax."])";
  const CliRun r = run_cli("--log-level warn localize -M " + run + " --prompt-file " + tmp("prompts") + ".json -p \"Heart size is enlarged.\" " +
                           in + " -o " + out + " --margin 10 --thresholds 0.2,0.6 --all");
  EXPECT_EQ(r.code, 1) << r.out;  // one unreadable file: reported, the rest done
  EXPECT_NE(r.out.find("broken.png"), std::string::npos) << r.out;
  std::istringstream lines(read(out + "/results.jsonl"));
  std::string line;
  int ok = 0, errors = 0;
  while (std::getline(lines, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("error")) {
      ++errors;
      continue;
    }
    ++ok;
    EXPECT_EQ(j["options"]["margin"], 10);
    EXPECT_EQ(j["options"]["thresholds"].size(), 2u);
    EXPECT_EQ(j["options"]["levels"], "deep");  // the model's heatmap_levels, echoed
    std::vector<int64_t> shape;
    const auto h = io::load_npy(j["files"]["heatmap_npy"].get<std::string>(), &shape);
    EXPECT_EQ(shape, (std::vector<int64_t>{224, 224}));
    int64_t nan = 0;
    float mx = -2;
    for (float v : h) {
      if (std::isnan(v)) ++nan;
      else mx = std::max(mx, v);
    }
    EXPECT_EQ(nan, 224 * 224 - 204 * 204);  // the 10-px margin
    EXPECT_FLOAT_EQ(mx, 1.0f);
    EXPECT_FLOAT_EQ(j["peak"]["value"].get<float>(), 1.0f);
    if (ok == 1) {  // numpy reads it as the same array
      const std::string py = "/usr/bin/python3 -c \"import numpy as n; a = n.load('" + j["files"]["heatmap_npy"].get<std::string>() +
                             "'); assert a.shape == (224, 224) and a.dtype == n.float32 and n.isnan(a).sum() == " +
                             std::to_string(nan) + "\"";
      EXPECT_EQ(std::system(py.c_str()), 0) << py;
    }
    for (const auto& reg : j["regions"]) EXPECT_GE(reg["score_max"].get<double>(), reg["threshold"].get<double>());
    EXPECT_TRUE(fs::exists(j["files"]["overlay_png"].get<std::string>()));
    EXPECT_EQ(j["files"]["masks"].size(), 2u);
  }
  EXPECT_EQ(ok, 4 * 3);
  EXPECT_EQ(errors, 1);
  for (const char* d : {"/0", "/0_2"}) {
    int npy = 0;
    for (const auto& e : fs::directory_iterator(out + d)) npy += e.path().extension() == ".npy";
    EXPECT_EQ(npy, 3) << d;
  }
  EXPECT_TRUE(fs::exists(out + "/options.json"));

  // --resume after an interruption: the run is cut after the first image's records and part of a
  // line of the second; the resumed run keeps the first image (its files are not written again),
  // does the rest and tries the broken file again.
  const std::string args = "--log-level info localize -M " + run + " --prompt-file " + tmp("prompts") +
                           ".json -p \"Heart size is enlarged.\" " + in + " -o " + out + " --margin 10 --thresholds 0.2,0.6 --all";
  {
    std::istringstream all(read(out + "/results.jsonl"));
    std::string cut, l;
    for (int n = 0; n < 4 && std::getline(all, l); ++n) cut += n < 3 ? l + "\n" : l.substr(0, l.size() / 2);
    std::ofstream(out + "/results.jsonl") << cut;
  }
  const auto first_npy = nlohmann::json::parse(read(out + "/results.jsonl").substr(0, read(out + "/results.jsonl").find('\n')))["files"]["heatmap_npy"].get<std::string>();
  const auto first_time = fs::last_write_time(first_npy);
  const CliRun resumed = run_cli(args + " --resume");
  EXPECT_EQ(resumed.code, 1) << resumed.out;  // the broken file, again
  EXPECT_NE(resumed.out.find("1 of 5 images already done"), std::string::npos) << resumed.out;
  EXPECT_NE(resumed.out.find("1 of them by the earlier run"), std::string::npos) << resumed.out;
  EXPECT_EQ(fs::last_write_time(first_npy), first_time);
  std::map<std::pair<std::string, std::string>, int> seen;
  int resumed_errors = 0;
  std::istringstream after(read(out + "/results.jsonl"));
  while (std::getline(after, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("error")) ++resumed_errors;
    else ++seen[{j["image"].get<std::string>(), j["prompt"].get<std::string>()}];
  }
  EXPECT_EQ(seen.size(), 4u * 3u);
  for (const auto& [key, n] : seen) EXPECT_EQ(n, 1) << key.first << " / " << key.second;
  EXPECT_EQ(resumed_errors, 1);
  // A file a kept record names, deleted since: that image is done again and the file is back.
  const std::string first_overlay = fs::path(first_npy).replace_extension().string() + "_overlay.png";
  ASSERT_TRUE(fs::remove(first_overlay)) << first_overlay;
  const CliRun redo = run_cli(args + " --resume");
  EXPECT_NE(redo.out.find("3 of 5 images already done"), std::string::npos) << redo.out;
  EXPECT_TRUE(fs::exists(first_overlay));
  EXPECT_NE(fs::last_write_time(first_npy), first_time);
  int redo_records = 0;
  std::istringstream redone(read(out + "/results.jsonl"));
  while (std::getline(redone, line)) redo_records += nlohmann::json::parse(line).contains("error") ? 0 : 1;
  EXPECT_EQ(redo_records, 4 * 3);
  // Other prompts or options than the run's: refused, nothing touched.
  const CliRun other = run_cli("localize -M " + run + " -p \"Heart size is enlarged.\" " + in + " -o " + out + " --resume");
  EXPECT_EQ(other.code, 1);
  EXPECT_NE(other.out.find("prompts"), std::string::npos) << other.out;

  // A MIMIC-CXR-JPG split as the inputs: the world's 8 validation films, one record each.
  const std::string lm_out = tmp("loc_mimic");
  const CliRun lm = run_cli("--log-level warn localize -M " + run + " -f Cardiomegaly --mimic " + world_ +
                            "/mimic-cxr-jpg --split validate --views all -o " + lm_out);
  ASSERT_EQ(lm.code, 0) << lm.out;
  const std::string lm_jl = read(lm_out + "/results.jsonl");
  EXPECT_EQ(std::count(lm_jl.begin(), lm_jl.end(), '\n'), 8);
  EXPECT_NE(lm_jl.find("/mimic-cxr-jpg/files/p10/"), std::string::npos);
  const CliRun no_input = run_cli("localize -M " + run + " -f Cardiomegaly -o " + tmp("loc_none"));
  EXPECT_EQ(no_input.code, 1);
  EXPECT_NE(no_input.out.find("--mimic"), std::string::npos) << no_input.out;
  const CliRun bad = run_cli("localize -M " + run + " -p \"x y\" " + in + "/0.jpg --interpolation cubic -o " + tmp("loc_bad"));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("cubic"), std::string::npos) << bad.out;
  const CliRun empty = run_cli("localize -M " + run + " -p \" \" " + in + "/0.jpg -o " + tmp("loc_bad"));
  EXPECT_EQ(empty.code, 1);
  EXPECT_NE(empty.out.find("prompt is empty"), std::string::npos) << empty.out;
}

// Test-split images of the e2e world and a labels CSV (1 = the image holds the finding).
std::vector<std::string> test_images(const std::string& world, const std::string& labels_csv, std::vector<std::string> cats) {
  std::istringstream lines(read(world + "/ground_truth/instances.jsonl"));
  std::string line, csv = "image";
  for (const auto& c : cats) csv += "," + c;
  csv += "\n";
  std::vector<std::string> out;
  while (std::getline(lines, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j["split"] != "test") continue;
    out.push_back(world + "/" + j["image"].get<std::string>());
    csv += j["image"].get<std::string>();
    for (const auto& c : cats) {
      bool has = false;
      for (const auto& inst : j["instances"]) has = has || inst["category"] == c;
      csv += has ? ",1" : ",0";
    }
    csv += "\n";
  }
  std::ofstream(labels_csv) << csv;  // paths relative to the world, where the CSV lives
  return out;
}

TEST_F(E2E, ClassifyWritesScoresMetricsAndUsesThePromptCache) {
  const std::string run = tmp("run_cls"), out = tmp("cls"), cache = tmp("cls_cache");
  ASSERT_EQ(run_cli("--log-level warn train -d " + world_ + "/mimic-cxr-jpg -o " + run + " -b 8 --max-steps 1 --no-validate").code, 0);
  const std::vector<std::string> cats = {"Pleural Effusion", "Pneumothorax", "Cardiomegaly"};
  const auto images = test_images(world_, world_ + "/labels.csv", cats);
  ASSERT_GE(images.size(), 10u);
  std::string list;
  for (const auto& im : images) list += im + "\n";
  std::ofstream(tmp("cls_list") + ".txt") << list;
  const std::string args = "classify -M " + run + " --categories \"Pleural Effusion,Pneumothorax,Cardiomegaly\" " + tmp("cls_list") +
                           ".txt --labels " + world_ + "/labels.csv --prompt-cache " + cache + " -o " + out;
  const CliRun r = run_cli(args);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("AUROC"), std::string::npos) << r.out;
  const std::string scores = read(out + "/scores.csv");
  EXPECT_EQ(scores.substr(0, scores.find('\n')), "image,Pleural Effusion,Pneumothorax,Cardiomegaly");
  EXPECT_EQ(std::count(scores.begin(), scores.end(), '\n'), static_cast<long>(images.size() + 1));
  const auto m = nlohmann::json::parse(read(out + "/metrics.json"));
  ASSERT_EQ(m["classes"].size(), 3u);
  for (const auto& c : m["classes"]) EXPECT_EQ(c["n_pos"].get<int>() + c["n_neg"].get<int>(), static_cast<int>(images.size()));
  const auto p = nlohmann::json::parse(read(out + "/prompts.json"));
  EXPECT_EQ(p["bank"]["classes"]["Pneumothorax"]["pos"].size(), 42u);  // the authors' table
  // Second run: every prompt from the disk cache, same scores.
  const CliRun again = run_cli(args + "2");
  ASSERT_EQ(again.code, 0) << again.out;
  EXPECT_NE(again.out.find("0 prompts encoded"), std::string::npos) << again.out;
  EXPECT_EQ(read(out + "2/scores.csv"), scores);
  // --resume after an interruption (3 records and part of a 4th written): the same scores and
  // metrics as the uninterrupted run, 3 images taken from the earlier run.
  const std::string metrics = read(out + "/metrics.json");
  {
    std::istringstream all(read(out + "/results.jsonl"));
    std::string cut, l;
    for (int n = 0; n < 4 && std::getline(all, l); ++n) cut += n < 3 ? l + "\n" : l.substr(0, l.size() / 2);
    std::ofstream(out + "/results.jsonl") << cut;
  }
  std::remove((out + "/scores.csv").c_str());
  const CliRun resumed = run_cli(args + " --resume");
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_NE(resumed.out.find("3 of them by the earlier run"), std::string::npos) << resumed.out;
  EXPECT_EQ(read(out + "/scores.csv"), scores);
  EXPECT_EQ(read(out + "/metrics.json"), metrics);
  const std::string jl = read(out + "/results.jsonl");
  EXPECT_EQ(std::count(jl.begin(), jl.end(), '\n'), static_cast<long>(images.size()));
  const CliRun other = run_cli("classify -M " + run + " --categories Pneumothorax " + tmp("cls_list") + ".txt -o " + out + " --resume");
  EXPECT_EQ(other.code, 1);
  EXPECT_NE(other.out.find("bank"), std::string::npos) << other.out;
  // Multi-class bank from a prompt file: rows sum to 1 and a label is chosen.
  std::ofstream(tmp("mc") + ".json") << R"({"mode": "multiclass", "classes": {"left": {"pos": ["left pleural effusion"]},
                                           "right": {"pos": ["right pleural effusion"]}, "none": {"pos": ["no pleural effusion"]}}})";
  const std::string mc_out = tmp("cls_mc");
  const CliRun mc = run_cli("--log-level warn classify -M " + run + " --prompt-file " + tmp("mc") + ".json " + images[0] + " " +
                            images[1] + " -o " + mc_out);
  ASSERT_EQ(mc.code, 0) << mc.out;
  std::istringstream lines(read(mc_out + "/results.jsonl"));
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    const auto j = nlohmann::json::parse(line);
    double sum = 0;
    for (const auto& [k, v] : j["scores"].items()) sum += v.get<double>();
    EXPECT_NEAR(sum, 1.0, 1e-5);
    EXPECT_TRUE(j.contains("label"));
    ++n;
  }
  EXPECT_EQ(n, 2);
  // Bad inputs: clear errors naming the file and the key or value.
  std::ofstream(tmp("badkey") + ".json") << R"({"clases": {}})";
  const CliRun bad = run_cli("classify -M " + run + " --prompt-file " + tmp("badkey") + ".json " + images[0] + " -o " + tmp("cls_bad"));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("unknown key 'clases'"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("badkey.json"), std::string::npos) << bad.out;
  const CliRun badbank = run_cli("classify -M " + run + " --bank chexpert " + images[0] + " -o " + tmp("cls_bad"));
  EXPECT_EQ(badbank.code, 1);
  EXPECT_NE(badbank.out.find("chexpert5"), std::string::npos) << badbank.out;
  std::ofstream(tmp("badlab") + ".csv") << "image,Edema\nx.png,1\n";
  const CliRun badlab = run_cli("classify -M " + run + " --bank chexpert5 " + images[0] + " --labels " + tmp("badlab") + ".csv -o " + tmp("cls_bad"));
  EXPECT_EQ(badlab.code, 1);
  EXPECT_NE(badlab.out.find("Atelectasis"), std::string::npos) << badlab.out;  // the missing class columns
  // A 16-bit PNG is read (min-max to 8 bits) and scored like any film.
  const std::string png16 = tmp("film16") + ".png";
  const std::string py = "/usr/bin/python3 -c \"import numpy as n; from PIL import Image; a = (n.arange(96 * 96).reshape(96, 96) * 7).astype(n.uint16); "
                         "Image.fromarray(a).save('" + png16 + "')\"";
  ASSERT_EQ(std::system(py.c_str()), 0) << py;
  const std::string out16 = tmp("cls16");
  const CliRun r16 = run_cli("--log-level warn classify -M " + run + " --bank siim " + png16 + " -o " + out16);
  EXPECT_EQ(r16.code, 0) << r16.out;
  EXPECT_NE(read(out16 + "/scores.csv").find("film16.png,"), std::string::npos);
  // A model directory with a file missing: an error naming it.
  const std::string mdir = tmp("cls_model");
  ASSERT_EQ(run_cli("--log-level warn import --checkpoint " + run + " -o " + mdir).code, 0);
  fs::remove(mdir + "/vocab.txt");
  const CliRun nomodel = run_cli("classify -M " + mdir + " --bank siim " + png16 + " -o " + tmp("cls_bad"));
  EXPECT_EQ(nomodel.code, 1);
  EXPECT_NE(nomodel.out.find("vocab.txt"), std::string::npos) << nomodel.out;
}

// localize and classify with -M repeated: the ensemble's heatmaps and probabilities are the means
// of the single models' (one of them with another input size and map side).
TEST_F(E2E, LocalizeAndClassifyAverageAnEnsemble) {
  const std::string a = tmp("run_lens_a"), b = tmp("run_lens_b"), cfg = tmp("lens_small.json");
  std::ofstream(cfg) << R"({"preset": "tiny", "image_size": 128, "upsample_size": 0})";
  ASSERT_EQ(run_cli("--log-level warn train -d " + world_ + "/mimic-cxr-jpg -o " + a + " -b 8 --max-steps 2 --no-validate -s 0").code, 0);
  ASSERT_EQ(run_cli("--log-level warn train --model-config " + cfg + " -d " + world_ + "/mimic-cxr-jpg -o " + b +
                    " -b 8 --max-steps 2 --no-validate -s 1").code, 0);
  const auto images = test_images(world_, tmp("lens_labels") + ".csv", {"Pleural Effusion", "Cardiomegaly"});
  ASSERT_GE(images.size(), 3u);
  const std::string inputs = images[0] + " " + images[1] + " " + images[2];
  auto localize = [&](const std::string& models, const std::string& out) {
    const CliRun r = run_cli("--log-level warn localize " + models + " -f \"Pleural Effusion\" -p \"Heart size is enlarged.\" " + inputs +
                             " --all --size 96 -o " + out);
    EXPECT_EQ(r.code, 0) << r.out;
    std::map<std::string, nlohmann::json> recs;  // "image|prompt" -> record
    std::istringstream lines(read(out + "/results.jsonl"));
    std::string line;
    while (std::getline(lines, line)) {
      const auto j = nlohmann::json::parse(line);
      recs[j["image"].get<std::string>() + "|" + j["prompt"].get<std::string>()] = j;
    }
    return std::make_pair(r, recs);
  };
  const std::string out_a = tmp("lens_a"), out_b = tmp("lens_b"), out_ab = tmp("lens_ab");
  const auto [ra, la] = localize("-M " + a, out_a);
  const auto [rb, lb] = localize("-M " + b, out_b);
  const auto [rab, lab] = localize("-M " + a + " -M " + b, out_ab);
  EXPECT_NE(rab.out.find("ensemble of 2 models"), std::string::npos) << rab.out;
  ASSERT_EQ(lab.size(), 6u);
  ASSERT_EQ(la.size(), 6u);
  ASSERT_EQ(lb.size(), 6u);
  double max_diff = 0, max_gap = 0, p_diff = 0;
  for (const auto& [key, j] : lab) {
    EXPECT_EQ(j["options"]["models"].get<int64_t>(), 2);
    const auto h = io::load_npy(j["files"]["heatmap_npy"].get<std::string>());
    const auto ha = io::load_npy(la.at(key)["files"]["heatmap_npy"].get<std::string>());
    const auto hb = io::load_npy(lb.at(key)["files"]["heatmap_npy"].get<std::string>());
    ASSERT_EQ(h.size(), 96u * 96u);
    ASSERT_EQ(ha.size(), h.size());
    ASSERT_EQ(hb.size(), h.size());
    for (size_t i = 0; i < h.size(); ++i) {
      ASSERT_EQ(std::isnan(h[i]), std::isnan(ha[i])) << key << " pixel " << i;
      if (std::isnan(h[i])) continue;
      max_diff = std::max(max_diff, std::abs(static_cast<double>(h[i]) - 0.5 * (ha[i] + hb[i])));
      max_gap = std::max(max_gap, std::abs(static_cast<double>(ha[i]) - hb[i]));
    }
    p_diff = std::max(p_diff, std::abs(j["probability"].get<double>() -
                                       0.5 * (la.at(key)["probability"].get<double>() + lb.at(key)["probability"].get<double>())));
  }
  EXPECT_LT(max_diff, 1e-6);
  EXPECT_GT(max_gap, 1e-2);  // the two models' maps do differ
  EXPECT_LT(p_diff, 1e-6);  // float probabilities
  const auto opts = nlohmann::json::parse(read(out_ab + "/options.json"));
  ASSERT_TRUE(opts["model"].is_array());
  EXPECT_EQ(opts["model"].size(), 2u);
  EXPECT_TRUE(nlohmann::json::parse(read(out_a + "/options.json"))["model"].is_string());

  // classify: scores.csv of the ensemble = the mean of the single models' (6 decimals).
  auto classify = [&](const std::string& models, const std::string& out) {
    const CliRun r = run_cli("--log-level warn classify " + models + " --categories \"Pleural Effusion,Cardiomegaly\" " + inputs + " -o " + out);
    EXPECT_EQ(r.code, 0) << r.out;
    return data::read_csv(out + "/scores.csv");
  };
  const data::CsvTable ca = classify("-M " + a, tmp("lcls_a")), cb = classify("-M " + b, tmp("lcls_b")),
                       cab = classify("-M " + a + " -M " + b, tmp("lcls_ab"));
  ASSERT_EQ(cab.rows.size(), 3u);
  double c_diff = 0, c_gap = 0;
  for (size_t r = 0; r < cab.rows.size(); ++r) {
    EXPECT_EQ(cab.at(r, 0), ca.at(r, 0));
    for (size_t c = 1; c < cab.header.size(); ++c) {
      const double x = std::stod(ca.at(r, c)), y = std::stod(cb.at(r, c));
      c_diff = std::max(c_diff, std::abs(std::stod(cab.at(r, c)) - 0.5 * (x + y)));
      c_gap = std::max(c_gap, std::abs(x - y));
    }
  }
  EXPECT_LT(c_diff, 2e-6);
  EXPECT_GT(c_gap, 1e-4);
}

TEST_F(E2E, LocalizeGatesMasksByPresenceAndDrawsGroundTruthBoxes) {
  const std::string run = tmp("run_gate");
  ASSERT_EQ(run_cli("--log-level warn train -d " + world_ + "/mimic-cxr-jpg -o " + run + " -b 8 --max-steps 1 --no-validate").code, 0);
  const auto images = test_images(world_, tmp("gate_labels") + ".csv", {"Pneumothorax"});
  const std::string img = images[0];
  std::ofstream(tmp("boxes") + ".csv") << "image,x,y,w,h,finding\n" << img << ",10,12,30,20,Pneumothorax\n";
  auto masks_in = [](const std::string& dir) {
    int n = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir)) n += e.path().string().find("_mask_") != std::string::npos;
    return n;
  };
  // Nothing passes a presence threshold of 1: no masks, no regions, heatmaps and overlays still written.
  const std::string absent = tmp("gate_absent");
  CliRun r = run_cli("--log-level warn localize -M " + run + " -f Pneumothorax -f Cardiomegaly --present-threshold 1 " + img + " -o " + absent);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(masks_in(absent), 0);
  std::istringstream lines(read(absent + "/results.jsonl"));
  std::string line;
  while (std::getline(lines, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_FALSE(j["present"].get<bool>());
    EXPECT_TRUE(j["regions"].empty());
    EXPECT_TRUE(fs::exists(j["files"]["overlay_png"].get<std::string>()));
  }
  const auto opts = nlohmann::json::parse(read(absent + "/options.json"));
  EXPECT_EQ(opts["presence_prompts"]["Findings suggesting pneumothorax."]["pos"].size(), 42u);
  // --all writes them anyway; --boxes draws the ground truth on the matching prompt's overlay only.
  const std::string all = tmp("gate_all"), boxed = tmp("gate_boxed");
  ASSERT_EQ(run_cli("--log-level warn localize -M " + run + " -f Pneumothorax -f Cardiomegaly --present-threshold 1 --all " + img + " -o " + all).code, 0);
  EXPECT_EQ(masks_in(all), 2 * 5);
  r = run_cli("--log-level warn localize -M " + run + " -f Pneumothorax -f Cardiomegaly --present-threshold 1 --boxes " + tmp("boxes") +
              ".csv " + img + " -o " + boxed);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string stem = fs::path(img).stem().string();
  EXPECT_NE(read(boxed + "/" + stem + "/findings_suggesting_pneumothorax_overlay.png"),
            read(absent + "/" + stem + "/findings_suggesting_pneumothorax_overlay.png"));
  // A boxes CSV named bare, in the working directory, with the image's path relative to it.
  const std::string cwd = tmp("gate_cwd"), film = "film" + fs::path(img).extension().string();
  fs::create_directories(cwd);
  fs::copy_file(img, cwd + "/" + film);
  std::ofstream(cwd + "/boxes.csv") << "image,x,y,w,h,finding\n" << film << ",10,12,30,20,Pneumothorax\n";
  r = run_cli_env("cd " + cwd + " &&", "--log-level warn localize -M " + run +
                  " -f Pneumothorax -f Cardiomegaly --present-threshold 1 --boxes boxes.csv " + film + " -o out");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(read(cwd + "/out/film/findings_suggesting_pneumothorax_overlay.png"),
            read(boxed + "/" + stem + "/findings_suggesting_pneumothorax_overlay.png"));
  std::ofstream(tmp("badboxes") + ".csv") << "image,x,y,w\n" << img << ",1,2,3\n";
  r = run_cli("localize -M " + run + " -f Pneumothorax --boxes " + tmp("badboxes") + ".csv " + img + " -o " + tmp("gate_bad"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("badboxes.csv"), std::string::npos) << r.out;
}

TEST(Distributed, BadLauncherEnvironmentIsAClearError) {
  const CliRun r = run_cli_env("WORLD_SIZE=2 RANK=5", "train -d /tmp -o /tmp/afloc_never");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("RANK=5"), std::string::npos) << r.out;
  const CliRun p = run_cli_env("WORLD_SIZE=two RANK=0", "train -d /tmp -o /tmp/afloc_never");
  EXPECT_EQ(p.code, 1);
  EXPECT_NE(p.out.find("WORLD_SIZE"), std::string::npos) << p.out;
}

}  // namespace
}  // namespace afloc::test
