// End to end through the `afloc` program: synth a phantom world, train, crash, resume, evaluate.
#include <gtest/gtest.h>

#include <filesystem>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_run.h"

namespace fs = std::filesystem;

namespace afloc::test {
namespace {

std::string tmp(const std::string& name) {
  const fs::path p = fs::path(::testing::TempDir()) / ("afloc_e2e_" + name);
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

class E2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
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
  const CliRun resumed = run_cli("--log-level warn train -o " + b + " --resume --max-steps 8 --json");
  ASSERT_EQ(resumed.code, 0) << resumed.out;

  const auto la = step_losses(a + "/metrics.jsonl"), lb = step_losses(b + "/metrics.jsonl");
  ASSERT_EQ(la.size(), 8u);
  ASSERT_EQ(lb.size(), 8u) << "steps 4-5 logged before the crash must be replaced, not repeated";
  for (const auto& [step, loss] : la) {
    ASSERT_TRUE(lb.count(step)) << step;
    EXPECT_NEAR(lb.at(step), loss, 1e-5 * std::max(1.0, std::abs(loss))) << "step " << step;
  }
  // Validation ran at the epoch end in both runs.
  EXPECT_NE(read(b + "/metrics.jsonl").find("val_loss"), std::string::npos);
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

TEST_F(E2E, EvaluatePhantomWritesTablesAndOverlays) {
  const std::string run = tmp("run_eval"), ev = tmp("eval");
  ASSERT_EQ(run_cli("--log-level warn train -d " + world_ + "/mimic-cxr-jpg -o " + run + " -b 8 --max-steps 2 --no-validate").code, 0);
  const CliRun r = run_cli("--log-level warn eval-phantom -r " + run + " -w " + world_ + " -o " + ev + " --overlays 4 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["macro"]["n"].get<int64_t>(), 0);
  EXPECT_TRUE(fs::exists(ev + "/cases.csv"));
  EXPECT_TRUE(fs::exists(ev + "/table.txt"));
  EXPECT_TRUE(fs::exists(ev + "/overlays/sheet.png"));
  int pngs = 0;
  for (const auto& e : fs::directory_iterator(ev + "/overlays")) pngs += e.path().extension() == ".png";
  EXPECT_EQ(pngs, 5);  // four overlays and the sheet
}

}  // namespace
}  // namespace afloc::test
