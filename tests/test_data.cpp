// Unit tests of the data layer: CSV, run-length encodings, the phantom world, MIMIC-CXR-JPG and
// manifest readers (with their counted skips), run configs, localization metrics.
#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "afloc/common/error.h"
#include "afloc/common/progress.h"
#include "afloc/data/csv.h"
#include "afloc/data/datasets.h"
#include "afloc/data/phantom.h"
#include "afloc/data/phantom_writer.h"
#include "afloc/data/rle.h"
#include "afloc/eval/metrics.h"
#include "afloc/text/clean.h"
#include "afloc/train/curves.h"
#include "afloc/train/run_config.h"

namespace fs = std::filesystem;

namespace afloc::data {
namespace {

std::string temp_dir(const std::string& name) {
  const fs::path p = fs::path(::testing::TempDir()) / ("afloc_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

void write(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

TEST(Csv, QuotesSpacesAndErrors) {
  const CsvTable t = parse_csv("a,b, c\n1,\"x, \"\"y\"\"\", z\n2,,\n", "mem");
  ASSERT_EQ(t.header.size(), 3u);
  EXPECT_EQ(t.header[2], " c");  // spaces are kept (SIIM's " EncodedPixels")
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.rows[0][1], "x, \"y\"");
  EXPECT_EQ(t.rows[0][2], " z");
  EXPECT_EQ(t.at(1, 1), "");
  EXPECT_EQ(t.column(" c"), 2u);
  try {
    t.column("missing");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing column 'missing'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("mem"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_csv("a,b\n\"unterminated,1\n", "bad.csv"), Error);
  EXPECT_THROW(parse_csv("", "empty.csv"), Error);
  EXPECT_EQ(csv_row({"a", "b,c", "q\"q", " s"}), "a,\"b,c\",\"q\"\"q\", s\n");
  // Round trip through the writer.
  const CsvTable back = parse_csv(csv_row({"h1", "h2"}) + csv_row({"x,1", "y\n2"}), "rt");
  EXPECT_EQ(back.rows[0][0], "x,1");
  EXPECT_EQ(back.rows[0][1], "y\n2");
}

Mask random_mask(int64_t h, int64_t w, uint32_t seed) {
  Mask m;
  m.height = h;
  m.width = w;
  m.pixels.resize(static_cast<size_t>(h * w));
  uint32_t s = seed;
  for (auto& p : m.pixels) {
    s = s * 1664525u + 1013904223u;
    p = (s >> 28) < 5;
  }
  return m;
}

TEST(Rle, CocoAndSiimRoundTrip) {
  for (uint32_t seed = 1; seed < 20; ++seed) {
    const Mask m = random_mask(13 + seed % 5, 7 + seed % 3, seed);
    EXPECT_EQ(coco_decode(coco_encode(m), m.height, m.width).pixels, m.pixels) << seed;
    EXPECT_EQ(siim_decode(siim_encode(m), m.height, m.width).pixels, m.pixels) << seed;
  }
  Mask empty;
  empty.height = empty.width = 4;
  empty.pixels.assign(16, 0);
  EXPECT_EQ(siim_encode(empty), "-1");
  EXPECT_EQ(siim_decode(" -1", 4, 4).count(), 0);
  EXPECT_EQ(coco_decode(coco_encode(empty), 4, 4).count(), 0);
}

TEST(Rle, HandCheckedEncodings) {
  // 3x2 mask, column-major order: (0,0)=0 (1,0)=1 (2,0)=1 | (0,1)=1 (1,1)=0 (2,1)=0
  Mask m;
  m.height = 3;
  m.width = 2;
  m.pixels = {0, 1, 1, 0, 1, 0};
  EXPECT_EQ(coco_counts(m), (std::vector<uint32_t>{1, 3, 2}));
  // pycocotools: counts [1, 3, 2] -> chars '1', '3', '2' (small values, no deltas before index 3)
  EXPECT_EQ(coco_encode(m), "132");
  // SIIM: starts relative to the previous run's end (0-based here as in the authors' rle2mask).
  EXPECT_EQ(siim_encode(m), "1 3");
  EXPECT_THROW(siim_decode("1 30", 3, 2), Error);
  EXPECT_THROW(siim_decode("1 x", 3, 2), Error);
  EXPECT_THROW(coco_decode("13", 3, 2), Error);  // runs cover 4 of 6 pixels
}

TEST(Phantom, DeterministicAndVaried) {
  const phantom::Study a = phantom::render_study(7), b = phantom::render_study(7), c = phantom::render_study(8);
  EXPECT_EQ(a.pixels, b.pixels);
  EXPECT_EQ(a.report(), b.report());
  EXPECT_NE(a.pixels, c.pixels);
  std::set<std::string> reports;
  int normal = 0, suggesting = 0;
  for (uint64_t s = 0; s < 300; ++s) {
    const phantom::Study st = phantom::render_study(s);
    reports.insert(st.report());
    normal += st.instances.empty();
    // Impressions sometimes restate a finding as "Findings suggesting ...", never a normal one.
    if (st.impression.find("Findings suggesting ") != std::string::npos) {
      ++suggesting;
      EXPECT_FALSE(st.instances.empty()) << st.report();
    }
  }
  EXPECT_GT(reports.size(), 250u) << "reports should vary";
  EXPECT_GT(suggesting, 20);
  EXPECT_GT(normal, 60);   // roughly a third are normal
  EXPECT_LT(normal, 140);
}

TEST(Phantom, ReportsMatchTheImage) {
  for (uint64_t s = 0; s < 200; ++s) {
    const phantom::Study st = phantom::render_study(s);
    ASSERT_EQ(st.pixels.size(), static_cast<size_t>(st.size * st.size));
    const std::string report = st.report();
    EXPECT_EQ(report.rfind("FINDINGS: ", 0), 0u);
    EXPECT_NE(report.find("\n\nIMPRESSION: "), std::string::npos);
    EXPECT_EQ(report.find("PTX"), std::string::npos);
    EXPECT_FALSE(text::clean_sentences(report).empty());
    for (const auto& inst : st.instances) {
      EXPECT_GT(inst.mask.count(), 0) << report;
      EXPECT_FALSE(inst.boxes.empty());
      EXPECT_NE(report.find(inst.sentence), std::string::npos) << "sentence not in report: " << inst.sentence;
      for (const auto& box : inst.boxes) {
        EXPECT_GE(box.x, 0);
        EXPECT_LE(box.x + box.w, st.size);
        EXPECT_GT(box.w, 0);
      }
      // The patient's side: right findings lie in the image's left half, and vice versa.
      if (inst.side == "right" || inst.side == "left") {
        int64_t left_half = 0, total = 0;
        for (int64_t y = 0; y < st.size; ++y)
          for (int64_t x = 0; x < st.size; ++x)
            if (inst.mask.pixels[static_cast<size_t>(y * st.size + x)]) {
              ++total;
              left_half += x < st.size / 2;
            }
        if (inst.side == "right") {
          EXPECT_EQ(left_half, total) << inst.sentence;
        } else {
          EXPECT_EQ(left_half, 0) << inst.sentence;
        }
      }
    }
    // What the report denies (a labeler's negatives, the chexpert CSV's 0.0) is absent and denied in
    // its words: "no <finding>" or, for the heart, a normal size.
    for (const phantom::Finding f : st.denied) {
      for (const auto& inst : st.instances) EXPECT_NE(inst.finding, f) << report;
      std::string lower = report;
      for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      const std::string word = f == phantom::Finding::kEffusion        ? "pleural effusion"
                               : f == phantom::Finding::kPneumothorax  ? "pneumothorax"
                               : f == phantom::Finding::kConsolidation ? "consolidation"
                               : f == phantom::Finding::kEdema         ? "pulmonary edema"
                                                                       : "normal";
      EXPECT_NE(lower.find(word), std::string::npos) << word << " denied but not named: " << report;
      if (f != phantom::Finding::kCardiomegaly) {
        EXPECT_NE(lower.find("no "), std::string::npos) << report;
      }
    }
    // A finding that is present is never negated.
    for (const auto& inst : st.instances) {
      if (inst.finding == phantom::Finding::kPneumothorax) {
        EXPECT_EQ(report.find("No pneumothorax"), std::string::npos);
      }
      if (inst.finding == phantom::Finding::kEffusion) {
        EXPECT_EQ(report.find("no pleural effusion"), std::string::npos);
      }
    }
  }
}

TEST(Phantom, UnseenFindingNeverInPretraining) {
  for (uint64_t s = 0; s < 300; ++s) {
    const phantom::Study st = phantom::render_study(s);
    EXPECT_EQ(st.report().find("ground glass"), std::string::npos);
    for (const auto& i : st.instances) EXPECT_NE(i.finding, phantom::Finding::kGroundGlass);
  }
  phantom::PhantomOptions o;
  o.unseen = true;
  const phantom::Study u = phantom::render_study(3, o);
  ASSERT_EQ(u.instances.size(), 1u);
  EXPECT_EQ(u.instances[0].finding, phantom::Finding::kGroundGlass);
}

TEST(Phantom, WorldOnDiskInThePublicFormats) {
  const std::string dir = temp_dir("world");
  phantom::SynthOptions o;
  o.out = dir;
  o.n_train = 12;
  o.n_val = 3;
  o.n_test = 10;
  o.n_unseen = 4;
  o.size = 96;
  o.seed = 5;
  o.progress = false;
  const auto sum = phantom::write_phantom_world(o);
  EXPECT_EQ(sum.train, 12);
  EXPECT_EQ(sum.val, 3);
  EXPECT_EQ(sum.test, 10);
  EXPECT_EQ(sum.unseen, 4);
  // The MIMIC reader sees exactly the train split, all with reports.
  MimicOptions mo;
  mo.root = dir + "/mimic-cxr-jpg";
  const PairList train = read_mimic(mo);
  EXPECT_EQ(train.samples.size(), 12u);
  EXPECT_EQ(train.skipped.total(), 0) << train.skipped.summary();
  for (const auto& s : train.samples) {
    EXPECT_TRUE(fs::exists(s.image)) << s.image;
    EXPECT_EQ(s.report.find("FINDINGS"), std::string::npos) << "section headers are stripped";
  }
  mo.splits = {"validate"};
  EXPECT_EQ(read_mimic(mo).samples.size(), 3u);
  // The chexpert CSV as the CheXpert labeler writes it: 1.0 stated, 0.0 denied by the report, blank
  // unmentioned; "No Finding" on normal studies.
  const CsvTable lab = read_csv(dir + "/mimic-cxr-jpg/mimic-cxr-2.0.0-chexpert.csv");
  int64_t denied = 0;
  for (size_t r = 0; r < lab.rows.size(); ++r) {
    bool positive = false;
    for (size_t c = 2; c < lab.header.size(); ++c) {
      const std::string& v = lab.at(r, c);
      EXPECT_TRUE(v.empty() || v == "1.0" || v == "0.0") << lab.header[c] << " = " << v;
      positive = positive || (v == "1.0" && lab.header[c] != "No Finding");
    }
    EXPECT_EQ(lab.at(r, lab.column("No Finding")) == "1.0", !positive) << "row " << r + 2;
    const std::string& subject = lab.at(r, lab.column("subject_id"));
    const std::string report = read_file(dir + "/mimic-cxr-jpg/files/p" + subject.substr(0, 2) + "/p" + subject + "/s" +
                                         lab.at(r, lab.column("study_id")) + ".txt");
    // Every split's rows: 0.0 exactly where the report denies the finding.
    const bool denies = report.find("o pleural effusion") != std::string::npos ||
                        report.find("or pleural effusion") != std::string::npos;
    EXPECT_EQ(lab.at(r, lab.column("Pleural Effusion")) == "0.0", denies) << "row " << r + 2 << ": " << report;
    denied += denies;
  }
  EXPECT_GT(denied, 3);
  // Read with the label CSV (loop.drop_same_labels), each pair carries its study's positive columns as
  // one key (0.0 and blank both absent): equal exactly for studies with the same positives.
  mo.splits = {"train"};
  mo.labels_csv = dir + "/mimic-cxr-jpg/mimic-cxr-2.0.0-chexpert.csv";
  const PairList labelled = read_mimic(mo);
  ASSERT_EQ(labelled.samples.size(), 12u);
  std::map<std::string, std::string> row_of;  // study -> its label cells
  for (size_t r = 0; r < lab.rows.size(); ++r) {
    std::string cells;
    for (size_t c = 2; c < lab.header.size(); ++c) cells += lab.at(r, c) == "1.0" ? "1" : "-";
    row_of[lab.at(r, lab.column("study_id"))] = cells;
  }
  const auto study_of = [](const Sample& s) { return fs::path(s.image).parent_path().filename().string().substr(1); };
  int64_t equal_pairs = 0;
  for (const auto& a : labelled.samples) {
    EXPECT_FALSE(a.labels.empty()) << a.id;
    for (const auto& b : labelled.samples) {
      EXPECT_EQ(a.labels == b.labels, row_of.at(study_of(a)) == row_of.at(study_of(b))) << a.id << " " << b.id;
      equal_pairs += &a != &b && a.labels == b.labels;
    }
  }
  EXPECT_GT(equal_pairs, 0);  // a third of the studies are normal
  const std::vector<int64_t> keys = label_keys(labelled.samples);
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_GE(keys[i], 0);
    for (size_t k = 0; k < keys.size(); ++k)
      EXPECT_EQ(keys[i] == keys[k], labelled.samples[i].labels == labelled.samples[k].labels);
  }
  // Ground truth: SIIM (leading-space column), CheXlocalize (COCO RLE), MS-CXR, RSNA all parse and agree
  // with instances.jsonl.
  const CsvTable siim = read_csv(dir + "/siim/train-rle.csv");
  EXPECT_EQ(siim.column(" EncodedPixels"), 1u);
  const CsvTable ms = read_csv(dir + "/ms_cxr/MS_CXR_Local_Alignment_v1.0.0.csv");
  for (const char* col : {"dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width", "image_height", "split"}) {
    EXPECT_NO_THROW(ms.column(col)) << col;
  }
  const CsvTable rsna = read_csv(dir + "/rsna/stage_2_train_labels.csv");
  EXPECT_EQ(rsna.header, (std::vector<std::string>{"patientId", "x", "y", "width", "height", "Target"}));
  const auto chex = nlohmann::json::parse(read_file(dir + "/chexlocalize/gt_segmentations_test.json"));
  EXPECT_EQ(chex.size(), 10u);
  int64_t pixels_jsonl = 0, pixels_chex = 0;
  std::istringstream gt(read_file(dir + "/ground_truth/instances.jsonl"));
  std::string line;
  int lines = 0;
  while (std::getline(gt, line)) {
    const auto j = nlohmann::json::parse(line);
    ++lines;
    if (j["split"] != "test") continue;
    for (const auto& inst : j["instances"]) {
      if (inst["category"] == "Pneumothorax") pixels_jsonl += inst["pixels"].get<int64_t>();
    }
  }
  EXPECT_EQ(lines, 14);
  for (auto it = chex.begin(); it != chex.end(); ++it) {
    const auto& t = it.value().at("Pneumothorax");
    pixels_chex += coco_decode(t.at("counts").get<std::string>(), t.at("size")[0].get<int64_t>(), t.at("size")[1].get<int64_t>()).count();
  }
  EXPECT_EQ(pixels_jsonl, pixels_chex);
  int64_t pixels_siim = 0;
  for (size_t r = 0; r < siim.rows.size(); ++r) pixels_siim += siim_decode(siim.at(r, 1), 96, 96).count();
  EXPECT_EQ(pixels_siim, pixels_jsonl);
  EXPECT_TRUE(fs::exists(dir + "/covid_rural/pngs_masks/phantom_0.png"));
  EXPECT_TRUE(fs::exists(dir + "/covid_rural/jpgs/phantom_3.jpg"));
}

TEST(Mimic, ReportSections) {
  EXPECT_EQ(report_sections("                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n INDICATION:  "
                            "cough\n\n FINDINGS: \n \n Heart size is normal.\n Lungs are clear.\n \n IMPRESSION: \n \n No acute "
                            "process.\n"),
            "Heart size is normal. Lungs are clear. No acute process.");
  EXPECT_EQ(report_sections("IMPRESSION: Only impression."), "Only impression.");
  EXPECT_EQ(report_sections("INDICATION: pain\nCOMPARISON: none"), "");
  EXPECT_EQ(report_sections("FINDINGS: Opacity at 3:00 position."), "Opacity at 3:00 position.");
  // Header spellings of real MIMIC-CXR reports, named as the dataset's section parser names them.
  EXPECT_EQ(report_sections(" INDICATION:  dyspnea\n \n CONCLUSION:  Mild edema.\n"), "Mild edema.");
  EXPECT_EQ(report_sections(" FINDINGS AND IMPRESSION:  No pneumothorax.\n"), "No pneumothorax.");
  EXPECT_EQ(report_sections(" FINDINGS/IMPRESSION:  Clear lungs.\n NOTIFICATION:  Called Dr. ___.\n"), "Clear lungs.");
  EXPECT_EQ(report_sections(" IMPRESSON:  Typo kept.\n"), "Typo kept.");
  EXPECT_EQ(report_sections(" FINAL IMPRESSION:  Stable.\n"), "Stable.");
  EXPECT_EQ(report_sections(" CHEST, TWO VIEWS:  Lungs clear.\n IMPRESSION:  Normal.\n"), "Lungs clear. Normal.");
  EXPECT_EQ(report_sections(" PA AND LATERAL VIEWS OF THE CHEST:\n \n Small effusion.\n"), "Small effusion.");
  EXPECT_EQ(report_sections(" PORTABLE AP CHEST RADIOGRAPH:  Line in place.\n"), "Line in place.");
  // ...while headers of other sections stay out, including ones that mention the chest after
  // naming their own section.
  EXPECT_EQ(report_sections(" COMPARISON WITH PRIOR CHEST RADIOGRAPH:  ___.\n CLINICAL HISTORY:  chest pain.\n"
                            " WET READ:  no ptx.\n RECOMMENDATION(S):  CT.\n"),
            "");
  EXPECT_EQ(report_sections(" CONCUSION:  As in the parser, a different section.\n"), "");
  // The parser's fallback for reports with neither section, when asked: the text after the first
  // blank line that follows text in the last section.
  const std::string simple = "                                 FINAL REPORT\n EXAMINATION:  CHEST (PORTABLE AP)\n \n"
                             " INDICATION:  ___ with fever\n \n COMPARISON:  ___\n \n Lungs are clear.  No effusion.\n"
                             " \n Heart size is normal.\n";
  EXPECT_EQ(report_sections(simple), "");
  EXPECT_EQ(report_sections(simple, true), "Lungs are clear.  No effusion.  Heart size is normal.");
  EXPECT_EQ(report_sections(" COMPARISON:\n \n Stable opacity.\n \n Recommend CT.\n", true), "Recommend CT.");
  EXPECT_EQ(report_sections(" INDICATION:  cough\n COMPARISON:  none\n", true), "");  // no blank line: nothing
  EXPECT_EQ(report_sections("No headers at all.\n\nSecond paragraph.\n", true), "Second paragraph.");
  EXPECT_EQ(report_sections(" FINDINGS:  Clear.\n \n NOTIFICATION:  Paged.\n \n Dr. ___ was told.\n", true), "Clear.");
}

TEST(Mimic, BadRowsAreCountedSkips) {
  const std::string root = temp_dir("mimic");
  write(root + "/mimic-cxr-2.0.0-metadata.csv",
        "dicom_id,subject_id,study_id,ViewPosition\n"
        "d1,10000001,50000001,PA\n"    // ok
        "d2,10000002,50000002,AP\n"    // image missing
        "d3,10000003,50000003,PA\n"    // report without sections
        "d4,10000004,50000004,LATERAL\n"  // not frontal: filtered, not a skip
        "d5,10000005,50000005,PA\n"    // empty report
        "d6,10000006,50000006,PA\n"    // not in split.csv
        "d7,10000007,50000007,PA\n");  // report not UTF-8
  write(root + "/mimic-cxr-2.0.0-split.csv",
        "dicom_id,study_id,subject_id,split\nd1,50000001,10000001,train\nd2,50000002,10000002,train\n"
        "d3,50000003,10000003,train\nd4,50000004,10000004,train\nd5,50000005,10000005,train\nd7,50000007,10000007,train\n");
  for (int i : {1, 3, 4, 5, 6, 7}) {
    const std::string s = std::to_string(i);
    write(root + "/files/p10/p1000000" + s + "/s5000000" + s + "/d" + s + ".jpg", "not decoded here");
  }
  write(root + "/files/p10/p10000001/s50000001.txt", "FINDINGS: Small left effusion.\nIMPRESSION: Effusion.");
  write(root + "/files/p10/p10000002/s50000002.txt", "FINDINGS: x y.");
  write(root + "/files/p10/p10000003/s50000003.txt", "INDICATION: cough.");
  write(root + "/files/p10/p10000004/s50000004.txt", "FINDINGS: lateral view.");
  write(root + "/files/p10/p10000005/s50000005.txt", "   \n");
  write(root + "/files/p10/p10000007/s50000007.txt", "FINDINGS: bad \xff\xfe bytes.");
  MimicOptions o;
  o.root = root;
  const PairList pl = read_mimic(o);
  ASSERT_EQ(pl.samples.size(), 1u);
  EXPECT_EQ(pl.samples[0].report, "Small left effusion. Effusion.");
  EXPECT_EQ(pl.skipped.counts.at("missing image"), 1);
  EXPECT_EQ(pl.skipped.counts.at("report without FINDINGS/IMPRESSION"), 1);
  EXPECT_EQ(pl.skipped.counts.at("empty report"), 1);
  EXPECT_EQ(pl.skipped.counts.at("not in split.csv"), 1);
  EXPECT_EQ(pl.skipped.counts.at("report not UTF-8"), 1);
  EXPECT_EQ(pl.skipped.total(), 5);
  EXPECT_NE(pl.skipped.summary().find("5 skipped"), std::string::npos) << pl.skipped.summary();
  o.views = {};
  EXPECT_EQ(read_mimic(o).samples.size(), 2u);  // the lateral view too
  o.views = {"PA", "AP"};
  // With the parser's last-paragraph fallback, a report without the sections but with a second
  // paragraph trains on that paragraph; one without stays a skip, named for both.
  o.last_paragraph = true;
  EXPECT_EQ(read_mimic(o).skipped.counts.at("report without FINDINGS/IMPRESSION or a last paragraph"), 1);
  write(root + "/files/p10/p10000003/s50000003.txt", "INDICATION: cough.\n \n Lungs clear.\n");
  const PairList lp = read_mimic(o);
  ASSERT_EQ(lp.samples.size(), 2u);
  EXPECT_EQ(lp.samples[1].report, "Lungs clear.");
  o.last_paragraph = false;
  // A missing CSV or column is an error naming the file.
  fs::remove(root + "/mimic-cxr-2.0.0-split.csv");
  try {
    read_mimic(o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mimic-cxr-2.0.0-split.csv"), std::string::npos) << e.what();
  }
  write(root + "/mimic-cxr-2.0.0-split.csv", "dicom_id,study_id\n");
  EXPECT_THROW(read_mimic(o), Error);
}

// The file checks and report reads run on several threads (parallel_io); what they find must not
// depend on it: the same pairs in the metadata's order and the same skips with the same examples.
// The studies' images are spread over the metadata (a study's report serves rows far apart), and
// images, reports and sections go missing in a fixed pattern whose counts are known.
TEST(Mimic, ParallelFileChecksGiveTheSerialResult) {
  const std::string root = temp_dir("mimic_parallel");
  const int n_studies = 120;
  std::string meta = "dicom_id,subject_id,study_id,ViewPosition\n", split = "dicom_id,study_id,subject_id,split\n";
  int64_t want_pairs = 0, want_missing_image = 0, want_missing_report = 0, want_no_sections = 0;
  for (int view = 0; view < 2; ++view) {  // each study's first image, then (120 rows later) its second
    for (int k = 0; k < n_studies; ++k) {
      const std::string subject = std::to_string(10000000 + k / 3), study = std::to_string(50000000 + k);
      const std::string dicom = "d" + std::to_string(k) + "v" + std::to_string(view);
      meta += dicom + "," + subject + "," + study + ",PA\n";
      split += dicom + "," + study + "," + subject + ",train\n";
      const std::string dir = root + "/files/p10/p" + subject;
      const bool image = (k + view) % 7 != 0, report = k % 11 != 0, sections = k % 13 != 0;
      if (image) write(dir + "/s" + study + "/" + dicom + ".jpg", "x");
      if (report && view == 0) write(dir + "/s" + study + ".txt", sections ? "FINDINGS: Study " + study + "." : "INDICATION: none.");
      if (!image) ++want_missing_image;
      else if (!report) ++want_missing_report;
      else if (!sections) ++want_no_sections;
      else ++want_pairs;
    }
  }
  write(root + "/mimic-cxr-2.0.0-metadata.csv", meta);
  write(root + "/mimic-cxr-2.0.0-split.csv", split);
  MimicOptions o;
  o.root = root;
  o.io_threads = 1;
  const PairList serial = read_mimic(o);
  EXPECT_EQ(static_cast<int64_t>(serial.samples.size()), want_pairs);
  EXPECT_EQ(serial.skipped.counts.at("missing image"), want_missing_image);
  EXPECT_EQ(serial.skipped.counts.at("missing report"), want_missing_report);
  EXPECT_EQ(serial.skipped.counts.at("report without FINDINGS/IMPRESSION"), want_no_sections);
  EXPECT_EQ(serial.samples[0].id, "d1v0");  // study 0 has no report
  EXPECT_EQ(serial.samples[0].report, "Study 50000001.");
  for (int threads : {2, 8, 64}) {
    o.io_threads = threads;
    const PairList par = read_mimic(o);
    ASSERT_EQ(par.samples.size(), serial.samples.size()) << threads;
    for (size_t i = 0; i < par.samples.size(); ++i) {
      EXPECT_EQ(par.samples[i].id, serial.samples[i].id) << threads;
      EXPECT_EQ(par.samples[i].image, serial.samples[i].image) << threads;
      EXPECT_EQ(par.samples[i].report, serial.samples[i].report) << threads;
    }
    EXPECT_EQ(par.skipped.counts, serial.skipped.counts) << threads;
    EXPECT_EQ(par.skipped.examples, serial.skipped.examples) << threads;
  }
  // A manifest's image checks likewise.
  std::string csv = "image,report\n";
  for (int k = 0; k < 200; ++k) {
    const std::string image = k % 5 == 0 ? "none" + std::to_string(k) + ".jpg" : "files/p10/p10000000/s50000001/d1v0.jpg";
    csv += image + "," + (k % 9 == 0 ? "" : "Report " + std::to_string(k) + ".") + "\n";
  }
  write(root + "/manifest.csv", csv);
  ManifestOptions mo;
  mo.path = root + "/manifest.csv";
  mo.io_threads = 1;
  const PairList ms = read_manifest(mo);
  EXPECT_EQ(ms.skipped.counts.at("missing image"), 40);
  EXPECT_EQ(ms.skipped.counts.at("empty report"), 18);  // k % 9 == 0 and k % 5 != 0: 23 - 5
  mo.io_threads = 8;
  const PairList mp = read_manifest(mo);
  ASSERT_EQ(mp.samples.size(), ms.samples.size());
  for (size_t i = 0; i < mp.samples.size(); ++i) EXPECT_EQ(mp.samples[i].report, ms.samples[i].report);
  EXPECT_EQ(mp.skipped.examples, ms.skipped.examples);
}

TEST(Manifest, CsvAndJsonlWithSkips) {
  const std::string root = temp_dir("manifest");
  write(root + "/img/a.png", "x");
  write(root + "/img/b.png", "x");
  write(root + "/m.csv",
        "image,report,split\nimg/a.png,\"Left effusion, small.\",train\nimg/missing.png,Text here.,train\n"
        "img/b.png,,train\nimg/b.png,Val report.,validate\n");
  ManifestOptions o;
  o.path = root + "/m.csv";
  const PairList pl = read_manifest(o);
  ASSERT_EQ(pl.samples.size(), 1u);
  EXPECT_EQ(pl.samples[0].image, root + "/img/a.png");
  EXPECT_EQ(pl.skipped.counts.at("missing image"), 1);
  EXPECT_EQ(pl.skipped.counts.at("empty report"), 1);
  write(root + "/m.jsonl",
        "{\"image\": \"img/a.png\", \"text\": \"One two.\"}\nnot json\n{\"path\": \"img/b.png\", \"report\": \"Three "
        "four.\", \"split\": \"train\"}\n\n"
        "{\"image\": \"img/a.png\", \"report\": \"caf\xe9 au lait.\"}\n"  // Latin-1, not UTF-8
        "{\"image\": \"img/a.png\", \"report\": 3}\n[\"img/a.png\", \"Five six.\"]\n"
        "{\"image\": \"img/b.png\", \"report\": \"Seven.\", \"split\": null, \"id\": \"b7\"}\n");
  o.path = root + "/m.jsonl";
  const PairList pj = read_manifest(o);
  ASSERT_EQ(pj.samples.size(), 3u);
  EXPECT_EQ(pj.samples[2].id, "b7");
  EXPECT_EQ(pj.skipped.counts.at("invalid JSON line (split unknown)"), 1);
  EXPECT_EQ(pj.skipped.counts.at("line not UTF-8 (split unknown)"), 1);
  EXPECT_EQ(pj.skipped.counts.at("JSON line not an object (split unknown)"), 1);
  EXPECT_EQ(pj.skipped.counts.at("field not a string (split unknown)"), 1);
  EXPECT_NE(pj.skipped.summary().find("m.jsonl line 6 (\"report\")"), std::string::npos) << pj.skipped.summary();
  EXPECT_EQ(pj.skipped.total(), 4);
  // Optional labels (loop.drop_same_labels), in a CSV column or a JSONL field; none known = unique keys.
  write(root + "/l.csv", "image,report,labels\nimg/a.png,One.,normal\nimg/b.png,Two.,normal\nimg/a.png,Three.,\n"
                         "img/b.png,Four.,effusion\n");
  o.path = root + "/l.csv";
  const PairList pl2 = read_manifest(o);
  ASSERT_EQ(pl2.samples.size(), 4u);
  EXPECT_EQ(pl2.samples[0].labels, "normal");
  EXPECT_EQ(pl2.samples[2].labels, "");
  const std::vector<int64_t> keys = label_keys(pl2.samples);
  EXPECT_EQ(keys[0], keys[1]);
  EXPECT_LT(keys[2], 0);
  EXPECT_NE(keys[0], keys[3]);
  EXPECT_NE(keys[0], keys[2]);
  write(root + "/l.jsonl", "{\"image\": \"img/a.png\", \"report\": \"One.\", \"labels\": \"Edema\"}\n");
  o.path = root + "/l.jsonl";
  EXPECT_EQ(read_manifest(o).samples.at(0).labels, "Edema");
  write(root + "/bad.csv", "file,text\nx,y\n");
  o.path = root + "/bad.csv";
  try {
    read_manifest(o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing column 'image'"), std::string::npos) << e.what();
  }
}

TEST(RunConfig, EveryShippedConfigLoadsAndValidates) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(std::string(AFLOC_SOURCE_DIR) + "/configs")) {
    if (e.path().extension() != ".json") continue;
    SCOPED_TRACE(e.path().string());
    const train::RunConfig c = train::load_run_config(e.path().string());
    EXPECT_NO_THROW(train::validate(c));
    ++n;
  }
  EXPECT_GE(n, 3);
}

TEST(RunConfig, DefaultsAreTheAuthorsAndParsingIsStrict) {
  const train::RunConfig d;
  EXPECT_EQ(d.optim.name, "adam");
  EXPECT_DOUBLE_EQ(d.optim.lr, 2e-5);
  EXPECT_DOUBLE_EQ(d.optim.beta1, 0.5);
  EXPECT_DOUBLE_EQ(d.optim.beta2, 0.999);
  EXPECT_DOUBLE_EQ(d.optim.weight_decay, 1e-6);
  EXPECT_DOUBLE_EQ(d.optim.gamma, 0.9);
  EXPECT_DOUBLE_EQ(d.optim.clip_norm, 0.25);
  EXPECT_EQ(d.loop.epochs, 5);
  EXPECT_EQ(d.data.views, (std::vector<std::string>{"PA", "AP"}));
  EXPECT_EQ(d.data.dicom_voi, "auto");
  // Round trip.
  const train::RunConfig back = train::parse_run_config(train::run_config_to_string(d), "rt");
  EXPECT_EQ(train::run_config_to_string(back), train::run_config_to_string(d));
  const auto c = train::parse_run_config(R"({"model": {"preset": "tiny"}, "optim": {"lr": 0.001, "schedule": "cosine"}})", "x");
  EXPECT_EQ(c.model.name, "tiny");
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.001);
  for (const char* bad : {R"({"optim": {"lr": "fast"}})", R"({"loop": {"batchsize": 3}})", R"({"loop": {"batch_size": 1}})",
                          R"({"optim": {"name": "sgd"}})", R"({"data": {"dicom_voi": "window"}})", R"({"nope": 1})", "{"}) {
    try {
      train::parse_run_config(bad, "run.json");
      FAIL() << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("run"), std::string::npos) << e.what();
    }
  }
}

// --resume keeps the run's own settings; what a command asks otherwise is listed, not applied.
TEST(RunConfig, ResumeKeepsTheRunsSettingsAndListsTheOnesIgnored) {
  train::RunConfig saved = train::load_run_config(std::string(AFLOC_SOURCE_DIR) + "/configs/phantom_tiny.json");
  saved.data.root = "/old/mimic";
  saved.out = "runs/a";
  saved.model.bert.vocab_size = 470;  // set from the built vocabulary before the checkpoint is written
  // The command that started the run, given again (scripts/demo.sh does this): nothing to report.
  train::RunConfig asked = train::load_run_config(std::string(AFLOC_SOURCE_DIR) + "/configs/phantom_tiny.json");
  asked.data.root = "/new/mimic";
  asked.out = "/moved/runs/a";
  asked.loop.epochs = 12;
  asked.loop.workers = 7;
  asked.data.cache_mb = 0;
  asked.loop.checkpoint_every = 50;
  asked.loop.validate = false;
  EXPECT_TRUE(train::resume_ignored_settings(asked, saved).empty());
  // Settings the run keeps: listed with both values, in config order.
  asked.optim.lr = 1e-4;
  asked.model.resnet.width = 16;
  asked.loop.amp_cpu = true;
  const auto ignored = train::resume_ignored_settings(asked, saved);
  ASSERT_EQ(ignored.size(), 3u) << ignored.size();
  EXPECT_EQ(ignored[0], "model.resnet.width: 16 given, 32 kept");
  EXPECT_EQ(ignored[1], "optim.lr: 0.0001 given, 0.0005 kept");
  EXPECT_EQ(ignored[2], "loop.amp_cpu: true given, false kept");
  // What a resume does take from the command.
  train::RunConfig kept = saved;
  train::apply_resume_settings(asked, kept);
  EXPECT_EQ(kept.data.root, "/new/mimic");
  EXPECT_EQ(kept.out, "/moved/runs/a");
  EXPECT_EQ(kept.loop.epochs, 12);
  EXPECT_EQ(kept.loop.workers, 7);
  EXPECT_EQ(kept.data.cache_mb, 0);
  EXPECT_EQ(kept.loop.checkpoint_every, 50);
  EXPECT_FALSE(kept.loop.validate);
  EXPECT_DOUBLE_EQ(kept.optim.lr, 5e-4);
  EXPECT_EQ(kept.model.resnet.width, 32);
  // A run started from --init weights takes its model from them: the command's model is not compared.
  asked.init = saved.init = "models/start";
  EXPECT_EQ(train::resume_ignored_settings(asked, saved).size(), 2u);
}

TEST(Metrics, HandCheckedCases) {
  // 2x3 maps; heatmap NaN at one pixel.
  const eval::Map gt = {1, 1, 0, 0, 0, 0};
  const eval::Map h = {0.9f, 0.2f, 0.8f, -1.0f, NAN, 0.0f};
  // t = 0.5: P = {0, 2}, G = {0, 1}: inter 1, union 3.
  EXPECT_DOUBLE_EQ(eval::iou(gt, h, 0.5), 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(eval::dice(gt, h, 0.5), 2.0 * 1 / (2 + 2));
  EXPECT_EQ(eval::predicted_pixels(h, 0.5), 2);
  EXPECT_TRUE(std::isnan(eval::iou(gt, h, 0.95)));        // empty prediction: undefined
  EXPECT_DOUBLE_EQ(eval::iou(gt, h, 0.95, false), 0.0);  // only_pos off: defined
  EXPECT_TRUE(eval::hit(gt, h));
  const eval::Map h2 = {0.1f, 0.2f, 0.8f, -1.0f, NAN, 0.0f};
  EXPECT_FALSE(eval::hit(gt, h2));
  // Miss distance: h2 peaks at (row 0, col 2), one pixel right of gt's (0, 1); a hit is 0.
  EXPECT_EQ(eval::peak_index(h2), 2);
  EXPECT_EQ(eval::peak_index(eval::Map(6, NAN)), -1);
  EXPECT_DOUBLE_EQ(eval::peak_distance(gt, eval::peak_index(h2), 3), 1.0);
  EXPECT_DOUBLE_EQ(eval::peak_distance(gt, eval::peak_index(h), 3), 0.0);
  EXPECT_DOUBLE_EQ(eval::peak_distance(eval::Map{0, 0, 0, 0, 0, 1}, eval::peak_index(h), 3), std::sqrt(5.0));  // (0,0) to (1,2)
  EXPECT_TRUE(std::isnan(eval::peak_distance(eval::Map(6, 0.0f), eval::peak_index(h), 3)));
  EXPECT_TRUE(std::isnan(eval::peak_distance(gt, eval::peak_index(eval::Map(6, NAN)), 3)));
  // CNR on the renormalised map: in = {1, 0.2/... }; check the sign and a flat map.
  EXPECT_GT(eval::cnr(gt, h), 0.0);
  EXPECT_DOUBLE_EQ(eval::cnr(gt, eval::Map{0, 0, 0, 0, 0, 0}), 0.0);
  EXPECT_TRUE(std::isnan(eval::nanmean({NAN, NAN})));
  EXPECT_DOUBLE_EQ(eval::nanmean({1.0, NAN, 3.0}), 2.0);
  eval::LocalizationMetric m;
  m.update("a", gt, h);
  m.update("a", gt, h2);
  m.update("b", gt, h);
  const auto agg = m.aggregate();
  ASSERT_EQ(agg.size(), 2u);
  EXPECT_DOUBLE_EQ(agg[0].second.hit_rate, 0.5);
  EXPECT_DOUBLE_EQ(m.macro().hit_rate, 0.75);
}

}  // namespace
}  // namespace afloc::data

// The progress bar's final line: "done/total" with a known total, the count alone without one.
TEST(Progress, FinalLineCountsWithAndWithoutATotal) {
  testing::internal::CaptureStderr();
  {
    afloc::ProgressBar known("load", 4, "img");
    known.update(3);
    known.finish();
    afloc::ProgressBar unknown("scan", 0, "file");
    unknown.update(5);
  }  // the destructor prints the unknown bar's final line
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("load [##################......]  75% 3/4 img |"), std::string::npos) << err;
  EXPECT_NE(err.find("scan 5 file |"), std::string::npos) << err;
  afloc::ProgressBar none("resumed", 0, "step");
  testing::internal::CaptureStderr();
  none.finish();
  const std::string zero = testing::internal::GetCapturedStderr();
  EXPECT_NE(zero.find("resumed 0 step |"), std::string::npos) << zero;  // was "00 step"
}

// Rates keep about three significant digits: "26089.73 study/s" was unreadable at a glance.
TEST(Progress, RatesShowAboutThreeDigits) {
  EXPECT_EQ(afloc::format_rate(0), "0.00");
  EXPECT_EQ(afloc::format_rate(2.054), "2.05");
  EXPECT_EQ(afloc::format_rate(63.34), "63.3");
  EXPECT_EQ(afloc::format_rate(26089.73), "26090");
}

namespace afloc::train {
namespace {

// metrics.jsonl read back (a cut last line counted, terms the run does not use left out) and drawn:
// each run's colour in the loss panel, validation dots, the terms or learning rates on the right.
TEST(Curves, ReadBackAndDrawnPerRun) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("afloc_curves_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto write = [&](const std::string& name, double scale) {
    std::ofstream f(dir / name);
    for (int s = 10; s <= 300; s += 10)
      f << R"({"step":)" << s << R"(,"epoch":1,"loss":)" << scale * (30.0 - s / 20.0) << R"(,"word":0.0,"sentence":)"
        << 10.0 - s / 60.0 << R"(,"report":)" << 5.0 - s / 100.0 << R"(,"step_loss":1,"lr":)" << 1e-4 * s / 300.0 << "}\n";
    f << R"({"step":150,"epoch":1,"val_loss":)" << scale * 25 << "}\n";
    f << R"({"step":300,"epoch":2,"val_loss":)" << scale * 20 << "}\n";
    f << R"({"step":310,"epoch":2,"lo)";  // cut by a kill
    return (dir / name).string();
  };
  const RunCurves a = read_curves(write("a.jsonl", 1.0), "a"), b = read_curves(write("b.jsonl", 0.5), "b");
  ASSERT_EQ(a.step.size(), 30u);
  EXPECT_DOUBLE_EQ(a.loss[0], 29.5);
  EXPECT_DOUBLE_EQ(a.lr.back(), 1e-4);
  EXPECT_EQ(a.term_names, (std::vector<std::string>{"sentence", "report"}));  // "word" is all zero
  EXPECT_EQ(a.val_loss, (std::vector<double>{25, 20}));
  EXPECT_EQ(a.bad_lines, 1);

  // Pixels of a colour (BGR) in the left (loss) or right panel.
  auto count = [](const cv::Mat& img, cv::Vec3b c, bool left) {
    int n = 0;
    for (int y = 0; y < img.rows; ++y)
      for (int x = left ? 0 : img.cols / 2; x < (left ? img.cols / 2 : img.cols); ++x) n += img.at<cv::Vec3b>(y, x) == c;
    return n;
  };
  const cv::Vec3b blue(180, 119, 31), orange(14, 127, 255), green(44, 160, 44), red(40, 39, 214);
  const std::string one = (dir / "one.png").string(), two = (dir / "two.png").string();
  plot_curves({a}, one);
  const cv::Mat i1 = cv::imread(one, cv::IMREAD_COLOR);
  ASSERT_EQ(i1.cols, 1100);
  EXPECT_GT(count(i1, blue, true), 200);    // the training loss
  EXPECT_GT(count(i1, orange, true), 20);   // the validation dots
  EXPECT_GT(count(i1, green, false), 200);  // the first loss term
  EXPECT_GT(count(i1, red, false), 200);    // the second
  plot_curves({a, b}, two);
  const cv::Mat i2 = cv::imread(two, cv::IMREAD_COLOR);
  EXPECT_GT(count(i2, blue, true), 200);    // run a
  EXPECT_GT(count(i2, orange, true), 200);  // run b, a line now
  EXPECT_GT(count(i2, orange, false), 50);  // its learning rate (drawn over a's, the same)
  EXPECT_EQ(count(i2, green, false), 0);    // no loss terms for several runs
  EXPECT_THROW(plot_curves({a}, (dir / "a.jsonl" / "x.png").string()), Error);  // a file where a folder should be
  EXPECT_THROW(read_curves((dir / "missing.jsonl").string(), "m"), Error);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace afloc::train
