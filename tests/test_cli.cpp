// The `afloc` program as a user runs it: exit codes, error messages naming files and values, help
// text showing the code's defaults.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <utility>
#include <vector>
#include <nlohmann/json.hpp>

#include "afloc/model/config.h"
#include "afloc/train/run_config.h"
#include "cli_run.h"
#include "afloc/text/vocab_builder.h"

namespace {

using afloc::test::CliRun;
CliRun run(const std::string& args) { return afloc::test::run_cli(args); }

TEST(Cli, VersionAndHelp) {
  const CliRun v = run("--version");
  EXPECT_EQ(v.code, 0);
  EXPECT_NE(v.out.find("afloc 0."), std::string::npos) << v.out;
  const CliRun h = run("--help");
  EXPECT_EQ(h.code, 0);
  for (const char* sub : {"tokenize", "vocab", "config", "demo", "clean"}) {
    EXPECT_NE(h.out.find(sub), std::string::npos) << sub;
  }
}

TEST(Cli, HelpShowsTheCodesDefaults) {
  const afloc::text::VocabBuildOptions d;
  const CliRun h = run("vocab build --help");
  EXPECT_EQ(h.code, 0);
  EXPECT_NE(h.out.find("=" + std::to_string(d.size)), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("=" + std::to_string(d.min_frequency)), std::string::npos) << h.out;
  const CliRun t = run("tokenize --help");
  EXPECT_NE(t.out.find("=97"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("=prompt"), std::string::npos) << t.out;
}

TEST(Cli, TrainAndLocalizeHelpShowTheCodesDefaults) {
  const afloc::train::RunConfig d;
  const CliRun t = run("train --help");
  ASSERT_EQ(t.code, 0);
  EXPECT_NE(t.out.find("--lr FLOAT=2e-05"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("--epochs INT=" + std::to_string(d.loop.epochs)), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("--clip FLOAT=0.25"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("default: " + d.optim.schedule), std::string::npos) << t.out;
  // The shown defaults are not what a -c config trains with: the help says which wins.
  EXPECT_NE(t.out.find("config's values apply instead, unless the flag is given"), std::string::npos) << t.out;
  const CliRun l = run("localize --help");
  ASSERT_EQ(l.code, 0);
  EXPECT_NE(l.out.find("--interpolation TEXT=bilinear"), std::string::npos) << l.out;  // infer::HeatmapOptions
  EXPECT_NE(l.out.find("--size INT=224"), std::string::npos) << l.out;
}

TEST(Cli, TrainFlagsOverrideOnlyTheConfigFieldsTheyName) {
  // `-c CONFIG -e 6`: epochs from the flag, everything else from the config, not the help's defaults.
  const CliRun r = run("train -c " AFLOC_SOURCE_DIR "/configs/phantom_tiny.json -e 6 --print-config");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["loop"]["epochs"], 6);
  EXPECT_DOUBLE_EQ(j["optim"]["lr"].get<double>(), 5e-4);
  EXPECT_EQ(j["optim"]["schedule"], "cosine");
  EXPECT_EQ(j["model"]["heatmap_levels"], "both");
  const CliRun b = run("train -c " AFLOC_SOURCE_DIR "/configs/phantom_tiny.json --print-config");
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_EQ(nlohmann::json::parse(b.out)["loop"]["epochs"], 10);
}

TEST(Cli, UsageErrorsExit2AndErrorsExit1NamingTheFile) {
  EXPECT_EQ(run("").code, 2);
  EXPECT_EQ(run("tokenize --no-such-flag x").code, 2);
  const CliRun r = run("tokenize --vocab /nonexistent/vocab.txt hello");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("/nonexistent/vocab.txt"), std::string::npos) << r.out;
  const CliRun c = run("config show --preset huge");
  EXPECT_EQ(c.code, 1);
  EXPECT_NE(c.out.find("huge"), std::string::npos) << c.out;
  // A device this program cannot use is an error naming it, whatever the command (no machine here
  // or in CI has a hundred GPUs).
  const CliRun gpu = run("--device gpu clean x");
  EXPECT_EQ(gpu.code, 1);
  EXPECT_NE(gpu.out.find("--device 'gpu': expected cpu, cuda or cuda:N"), std::string::npos) << gpu.out;
  const CliRun far = run("--device cuda:99 clean x");
  EXPECT_EQ(far.code, 1);
  EXPECT_NE(far.out.find("--device cuda:99: "), std::string::npos) << far.out;
  // Values outside an option's range are usage errors naming the option, before any file is read;
  // the same commands with values in range fail later, on the missing files (code 1).
  const std::vector<std::pair<std::string, std::string>> ranged = {
      {"eval-phantom -w /nonexistent/world", "--eval-size 0"},
      {"eval-phantom -w /nonexistent/world", "--overlays -3"},
      {"eval-phantom -w /nonexistent/world", "--bootstrap -1"},
      {"eval-phantom -w /nonexistent/world", "--centre-n 0"},
      {"eval-phantom -w /nonexistent/world", "--truth outlines"},
      {"localize -M /nonexistent/model -f Edema x.png", "--centre-n 2.5"},
      {"classify -M /nonexistent/model x.png", "--threshold 7"},
      {"localize -M /nonexistent/model -f Edema x.png", "--present-threshold -0.5"}};
  for (const auto& [command, bad] : ranged) {
    const CliRun u = run(command + " " + bad);
    EXPECT_EQ(u.code, 2) << bad << ": " << u.out;
    EXPECT_NE(u.out.find(bad.substr(0, bad.find(' '))), std::string::npos) << u.out;
    EXPECT_EQ(u.out.find("1797693"), std::string::npos) << u.out;  // no range up to the largest double
    EXPECT_EQ(run(command).code, 1) << command;
  }
}

TEST(Cli, ConfigShowPrintsLoadableJson) {
  const CliRun r = run("config show --preset tiny");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto c = afloc::model::parse_config(r.out, "stdout");
  EXPECT_EQ(c.name, "tiny");
}

TEST(Cli, VocabBuildThenTokenize) {
  const std::string dir = ::testing::TempDir();
  const std::string corpus = dir + "/afloc_cli_corpus.txt";
  std::ofstream(corpus) << "FINDINGS: Small left pleural effusion. No pneumothorax.\n"
                           "Moderate right pleural effusion. Heart size is normal.\n";
  const std::string vocab = dir + "/afloc_cli_vocab.txt";
  const CliRun b = run("--log-level quiet vocab build --lines --min-frequency 1 --size 120 -c " + corpus + " -o " + vocab);
  ASSERT_EQ(b.code, 0) << b.out;
  const CliRun t = run("tokenize -v " + vocab + " --mode prompt 'Small pleural effusion.'");
  ASSERT_EQ(t.code, 0) << t.out;
  const auto j = nlohmann::json::parse(t.out);
  EXPECT_EQ(j["text"], "small pleural effusion");
  for (const auto& tok : j["tokens"]) EXPECT_NE(tok.get<std::string>(), "[UNK]");
}

}  // namespace

namespace {

TEST(Cli, DemoEncodesAndTrainsTheTinyModel) {
  const CliRun r = run("--log-level quiet demo --json --steps 2 --batch 3 --seed 1");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["preset"], "tiny");
  EXPECT_EQ(j["shapes"]["v_d (deep regions)"], "(3, 128, 10, 10)");
  EXPECT_EQ(j["shapes"]["t_w (words)"], "(3, 128, 97)");
  ASSERT_EQ(j["steps"].size(), 3u);
  for (const auto& s : j["steps"]) {
    const double total = s["loss"];
    EXPECT_TRUE(std::isfinite(total));
    EXPECT_NEAR(total, s["word"].get<double>() + s["sentence"].get<double>() + s["report"].get<double>(), 1e-3);
  }
  EXPECT_EQ(run("demo --batch 1").code, 1);  // a contrastive batch needs two pairs
}

}  // namespace
