// Slow end-to-end check that localization emerges from image-report pairs alone: a phantom world,
// 600 steps of `tiny` pretraining (configs/phantom_tiny.json at a flat learning rate; ~7 minutes on
// a 2-core CPU without AVX-512), then zero-shot heatmaps for "Findings suggesting {finding}." against
// the hidden masks, compared with the centre prior. Measured at this budget: hit 0.42 (prior 0), IoU
// 2.07x the prior's, CNR 2.00 (prior 0.68), against the findings' boxes hit 0.57 (session 31); the
// recipe before the sentence–shallow term scored 0.20, 1.79x, 1.86 here (on another CPU), so the
// thresholds (hit +0.2, IoU 1.4x) leave room for run-to-run and machine-to-machine noise, and the
// demo's full run goes further (README). On the 2-core AMD EPYC (Zen 4, OpenBLAS's own kernels) of
// session 25: training 259 s in a fresh-clone CI run, hit 0.33, IoU 1.55x, CNR 1.49; 500 steps
// (231 s) gave hit 0.24, too near the threshold, so the run keeps 600 steps. The test set is never seen in training; nothing here is tuned on it.
#include <gtest/gtest.h>

#include <algorithm>

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "box_cases.h"
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
                           world + "/mimic-cxr-jpg -o " + run + " --schedule step --max-steps 600 --no-validate --json");
  ASSERT_EQ(t.code, 0) << t.out;
  const CliRun e = run_cli("--log-level warn eval-phantom -r " + run + " -w " + world + " -o " + ev + " --overlays 0 --json");
  ASSERT_EQ(e.code, 0) << e.out;
  const auto m = nlohmann::json::parse(e.out)["macro"];
  const double iou = m["iou"], base_iou = m["baseline_iou"], cnr = m["cnr"], base_cnr = m["baseline_cnr"];
  const double hit = m["hit_rate"], base_hit = m["baseline_hit_rate"];
  const double train_s = nlohmann::json::parse(t.out.substr(t.out.find('{')))["seconds"];
  std::printf("[learn] trained 600 steps in %.0f s; macro over %lld findings: IoU %.3f (centre prior %.3f), CNR %.3f (%.3f), "
              "hit %.3f (%.3f)\n",
              train_s, static_cast<long long>(m["n"].get<int64_t>()), iou, base_iou, cnr, base_cnr, hit, base_hit);
  EXPECT_GT(hit, base_hit + 0.20);
  EXPECT_GT(iou, 1.4 * base_iou);
  EXPECT_GT(cnr, std::max(1.0, base_cnr + 0.3));
  // The same heatmaps scored against the findings' boxes (MS-CXR's protocol): every case checked
  // against the world's MS-CXR CSV, and a mask lies within its boxes, so the box hit rate is the
  // higher one.
  const std::string eb = root + "/eval_boxes";
  const CliRun b = run_cli("--log-level warn eval-phantom -r " + run + " -w " + world + " -o " + eb +
                           " --truth boxes --overlays 0 --no-classify --bootstrap 0 --json");
  ASSERT_EQ(b.code, 0) << b.out;
  const auto mb = nlohmann::json::parse(b.out)["macro"];
  const double box_hit = mb["hit_rate"];
  std::printf("[learn] against boxes: hit %.3f (%.3f), IoU %.3f (%.3f)\n", box_hit, mb["baseline_hit_rate"].get<double>(),
              mb["iou"].get<double>(), mb["baseline_iou"].get<double>());
  EXPECT_GT(check_box_cases(world, eb + "/cases.csv", ev + "/cases.csv", /*mask_within_box=*/true), 0);
  EXPECT_GE(box_hit, hit);
}

}  // namespace
}  // namespace afloc::test
