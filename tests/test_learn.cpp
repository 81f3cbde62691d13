// Slow end-to-end check that localization starts to emerge from image-report pairs alone: a phantom
// world, ~4 minutes of `tiny` pretraining (configs/phantom_tiny.json at a flat learning rate, 250
// steps), then zero-shot heatmaps for "Findings suggesting {finding}." against the hidden masks,
// compared with the centre prior. At this budget only the pointing game is above the prior (its
// peak sits on the mediastinum, inside no lung finding) and the heatmaps' contrast is positive;
// IoU and CNR above the prior take the ~13-minute demo run (README). The test set is never seen in
// training; nothing here is tuned on it.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli_run.h"

namespace fs = std::filesystem;

namespace afloc::test {
namespace {

TEST(Learn, LocalizationEmergesFromReportsAlone) {
  const std::string root = (fs::path(::testing::TempDir()) / ("afloc_learn_" + std::to_string(::getpid()))).string();
  fs::remove_all(root);
  const std::string world = root + "/world", run = root + "/run", ev = root + "/eval";
  const CliRun s = run_cli("--log-level warn synth --out " + world + " -n 6000 -m 150 --seed 11");
  ASSERT_EQ(s.code, 0) << s.out;
  const CliRun t = run_cli("--log-level warn train -c " + std::string(AFLOC_SOURCE_DIR) + "/configs/phantom_tiny.json -d " +
                           world + "/mimic-cxr-jpg -o " + run + " --schedule step --max-steps 250 --no-validate --json");
  ASSERT_EQ(t.code, 0) << t.out;
  const CliRun e = run_cli("--log-level warn eval-phantom -r " + run + " -w " + world + " -o " + ev + " --overlays 0 --json");
  ASSERT_EQ(e.code, 0) << e.out;
  const auto m = nlohmann::json::parse(e.out)["macro"];
  const double iou = m["iou"], base_iou = m["baseline_iou"], cnr = m["cnr"], base_cnr = m["baseline_cnr"];
  const double hit = m["hit_rate"], base_hit = m["baseline_hit_rate"];
  std::printf("[learn] macro over %lld findings: IoU %.3f (centre prior %.3f), CNR %.3f (%.3f), hit %.3f (%.3f)\n",
              static_cast<long long>(m["n"].get<int64_t>()), iou, base_iou, cnr, base_cnr, hit, base_hit);
  EXPECT_GT(hit, base_hit + 0.08);
  EXPECT_GT(cnr, 0.1);
  EXPECT_GT(iou, 0.5 * base_iou);
}

}  // namespace
}  // namespace afloc::test
