#pragma once
// Checks `eval-phantom --truth boxes` against the world's public-format files: every case's peak is
// the one the mask-scored run found (the same heatmap), and it is a hit exactly when the peak lies
// in one of the case's boxes as the world's MS-CXR CSV lists them, mapped into the evaluation square
// by box_mapping. Returns the box hits (0 when a check failed).
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "afloc/data/csv.h"
#include "afloc/eval/metrics.h"

namespace afloc::test {

/// `mask_within_box`: the films are at the evaluation size, so each mask lies inside its bounding
/// boxes and a mask hit must be a box hit too.
inline int check_box_cases(const std::string& world, const std::string& box_cases_csv, const std::string& mask_cases_csv,
                           bool mask_within_box, int64_t eval_size = 224) {
  const data::CsvTable ms = data::read_csv(world + "/ms_cxr/MS_CXR_Local_Alignment_v1.0.0.csv");
  std::map<std::pair<std::string, std::string>, std::vector<std::vector<int64_t>>> boxes;
  for (size_t r = 0; r < ms.rows.size(); ++r) {
    std::vector<double> xywh;
    for (const char* k : {"x", "y", "w", "h"}) xywh.push_back(std::stod(ms.at(r, ms.column(k))));
    boxes[{ms.at(r, ms.column("dicom_id")), ms.at(r, ms.column("category_name"))}].push_back(
        eval::box_mapping(xywh, std::stoll(ms.at(r, ms.column("image_width"))),
                          std::stoll(ms.at(r, ms.column("image_height"))), eval_size));
  }
  const data::CsvTable bc = data::read_csv(box_cases_csv), mc = data::read_csv(mask_cases_csv);
  const size_t hit = bc.column("hit"), px = bc.column("peak_x"), py = bc.column("peak_y"),
               dist = bc.column("peak_distance_px");
  EXPECT_EQ(bc.rows.size(), mc.rows.size());
  if (bc.rows.size() != mc.rows.size()) return 0;
  int hits = 0;
  for (size_t r = 0; r < bc.rows.size(); ++r) {
    const std::pair<std::string, std::string> key{bc.at(r, 0), bc.at(r, 1)};
    EXPECT_EQ(key, std::make_pair(mc.at(r, 0), mc.at(r, 1))) << "row " << r;
    EXPECT_EQ(bc.at(r, px), mc.at(r, px)) << "row " << r;
    EXPECT_EQ(bc.at(r, py), mc.at(r, py)) << "row " << r;
    const auto it = boxes.find(key);
    EXPECT_NE(it, boxes.end()) << key.first << " " << key.second << " is not in the MS-CXR CSV";
    if (it == boxes.end()) return 0;
    const int64_t x = std::stoll(bc.at(r, px)), y = std::stoll(bc.at(r, py));
    bool inside = false;
    for (const auto& b : it->second) inside = inside || (x >= b[0] && x < b[0] + b[2] && y >= b[1] && y < b[1] + b[3]);
    EXPECT_EQ(bc.at(r, hit) == "1", inside) << "row " << r;
    EXPECT_EQ(bc.at(r, hit) == "1", std::stod(bc.at(r, dist)) == 0.0) << "row " << r;
    if (mask_within_box && mc.at(r, hit) == "1") {
      EXPECT_EQ(bc.at(r, hit), "1") << "row " << r;
    }
    hits += inside;
  }
  return hits;
}

}  // namespace afloc::test
