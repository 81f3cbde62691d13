// Slow end-to-end check that localization emerges from image-report pairs alone: a small phantom
// world, a few minutes of `tiny` pretraining with configs/phantom_tiny.json, then zero-shot heatmaps
// for "Findings suggesting {finding}." against the hidden masks, compared with the centre prior.
// The test set is never seen in training; nothing here is tuned on it.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli_run.h"

namespace fs = std::filesystem;

namespace afloc::test {
namespace {

TEST(Learn, LocalizationEmergesFromReportsAlone) {
  const std::string root = (fs::path(::testing::TempDir()) / "afloc_learn").string();
  fs::remove_all(root);
  const std::string world = root + "/world", run = root + "/run", ev = root + "/eval";
  const CliRun s = run_cli("--log-level warn synth --out " + world + " -n 2500 -m 150 --seed 11");
  ASSERT_EQ(s.code, 0) << s.out;
  const CliRun t = run_cli("--log-level warn train -c " + std::string(AFLOC_SOURCE_DIR) + "/configs/phantom_tiny.json -d " +
                           world + "/mimic-cxr-jpg -o " + run + " -e 3 --no-validate --json");
  ASSERT_EQ(t.code, 0) << t.out;
  const CliRun e = run_cli("--log-level warn eval-phantom -r " + run + " -w " + world + " -o " + ev + " --overlays 0 --json");
  ASSERT_EQ(e.code, 0) << e.out;
  const auto m = nlohmann::json::parse(e.out)["macro"];
  const double iou = m["iou"], base_iou = m["baseline_iou"], cnr = m["cnr"], base_cnr = m["baseline_cnr"];
  const double hit = m["hit_rate"], base_hit = m["baseline_hit_rate"];
  std::printf("[learn] macro over %lld findings: IoU %.3f (centre prior %.3f), CNR %.3f (%.3f), hit %.3f (%.3f)\n",
              static_cast<long long>(m["n"].get<int64_t>()), iou, base_iou, cnr, base_cnr, hit, base_hit);
  EXPECT_GT(iou, 1.15 * base_iou);
  EXPECT_GT(cnr, base_cnr + 0.5);
  EXPECT_GT(hit, base_hit + 0.05);
}

}  // namespace
}  // namespace afloc::test
