#include "afloc/data/phantom_writer.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <cmath>
#include <nlohmann/json.hpp>
#include <thread>

#include "afloc/common/error.h"
#include "afloc/common/parallel.h"
#include "afloc/common/seed.h"
#include "afloc/data/csv.h"
#include "afloc/data/image_file.h"
#include "afloc/data/phantom.h"
#include "afloc/data/rle.h"

namespace fs = std::filesystem;

namespace afloc::data::phantom {
namespace {

// The CheXlocalize tasks, in the order of the public files.
const std::vector<std::string> kChexlocalizeTasks = {
    "Enlarged Cardiomediastinum", "Cardiomegaly",  "Lung Lesion",      "Airspace Opacity", "Edema",
    "Consolidation",              "Atelectasis",   "Pneumothorax",     "Pleural Effusion", "Support Devices"};

// CheXpert labeler columns of mimic-cxr-2.0.0-chexpert.csv.
const std::vector<std::string> kChexpertColumns = {
    "Atelectasis",  "Cardiomegaly",     "Consolidation", "Edema",        "Enlarged Cardiomediastinum",
    "Fracture",     "Lung Lesion",      "Lung Opacity",  "No Finding",   "Pleural Effusion",
    "Pleural Other", "Pneumonia",       "Pneumothorax",  "Support Devices"};

struct Record {
  int64_t index = 0;
  std::string split, dicom_id, subject, study, rel_image;
  Study study_data;  // instances kept whole for test/unseen only; findings and denials for all
};

cv::Mat gray_mat(const Study& st) {
  return cv::Mat(static_cast<int>(st.size), static_cast<int>(st.size), CV_8UC1, const_cast<uint8_t*>(st.pixels.data()));
}

cv::Mat mask_mat(const Mask& m, uint8_t on) {
  cv::Mat out(static_cast<int>(m.height), static_cast<int>(m.width), CV_8UC1);
  for (int64_t i = 0; i < m.height * m.width; ++i) out.data[i] = m.pixels[static_cast<size_t>(i)] ? on : 0;
  return out;
}

// Studies in the validate split: --n-val, or 5% of the train split (at least 1).
int64_t validation_count(const SynthOptions& o) { return o.n_val >= 0 ? o.n_val : std::max<int64_t>(1, o.n_train / 20); }

void write_text(const std::string& path, const std::string& text) {
  create_parent_dirs(path);
  write_file_atomic(path, text);
}

std::string hex_id(uint64_t v) {
  // MIMIC dicom_ids look like "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014".
  char buf[64];
  const uint64_t w = v * 0xD6E8FEB86659FD93ULL;
  std::snprintf(buf, sizeof buf, "%08x-%08x-%08x-%08x-%08x", static_cast<unsigned>(v >> 32), static_cast<unsigned>(v),
                static_cast<unsigned>(w >> 32), static_cast<unsigned>(w), static_cast<unsigned>((v ^ w) >> 16));
  return buf;
}

}  // namespace

uint64_t study_seed(uint64_t seed, int64_t index) {
  // Independent streams per study, the same whatever the thread count.
  return mix_seed(seed, static_cast<uint64_t>(index));
}

SynthSummary write_phantom_world(const SynthOptions& o) {
  if (o.out.empty()) throw Error("synth: --out is required");
  if (o.n_train < 0 || o.n_test < 0 || o.n_unseen < 0) throw Error("synth: counts must be >= 0");
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t n_val = validation_count(o);
  const int64_t n_main = o.n_train + n_val + o.n_test, n_total = n_main + o.n_unseen;
  try {
    fs::create_directories(o.out);
  } catch (const std::exception& e) {
    throw Error(o.out + ": cannot create the output directory (" + e.what() + ")");
  }
  const fs::path root(o.out), mimic = root / "mimic-cxr-jpg";

  std::vector<Record> records(static_cast<size_t>(n_total));
  const int n_threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  try {
    parallel_for(static_cast<size_t>(n_total), n_threads, "synth", "img", o.progress, [&](size_t k) {
      const auto i = static_cast<int64_t>(k);
      Record& rec = records[k];
      rec.index = i;
      PhantomOptions po;
      po.size = o.size;
      po.unseen = i >= n_main;
      rec.split = i < o.n_train ? "train" : (i < o.n_train + n_val ? "validate" : (i < n_main ? "test" : "unseen"));
      const uint64_t ss = study_seed(o.seed, i);
      Study st = render_study(ss, po);
      rec.dicom_id = hex_id(study_seed(o.seed ^ 0xD1C0D1C0ULL, i));
      rec.subject = std::to_string(10000000 + i);
      rec.study = std::to_string(50000000 + i);
      if (rec.split == "unseen") {
        rec.rel_image = "covid_rural/jpgs/phantom_" + std::to_string(i - n_main) + ".jpg";
        write_image_file((root / rec.rel_image).string(), gray_mat(st), o.jpeg_quality);
        cv::Mat all = cv::Mat::zeros(static_cast<int>(st.size), static_cast<int>(st.size), CV_8UC1);
        for (const auto& inst : st.instances) all |= mask_mat(inst.mask, 255);
        write_image_file((root / ("covid_rural/pngs_masks/phantom_" + std::to_string(i - n_main) + ".png")).string(), all, 100);
      } else {
        const std::string pdir = "files/p" + rec.subject.substr(0, 2) + "/p" + rec.subject;
        rec.rel_image = pdir + "/s" + rec.study + "/" + rec.dicom_id + ".jpg";
        write_image_file((mimic / rec.rel_image).string(), gray_mat(st), o.jpeg_quality);
        write_text((mimic / (pdir + "/s" + rec.study + ".txt")).string(), st.report());
      }
      if (rec.split == "test" || rec.split == "unseen") {
        rec.study_data = std::move(st);
      } else {
        rec.study_data.instances.clear();
        for (auto& inst : st.instances) {
          Instance light;
          light.finding = inst.finding;
          rec.study_data.instances.push_back(light);
        }
        rec.study_data.denied = std::move(st.denied);
      }
    });
  } catch (const std::exception& e) {
    throw Error(std::string("synth: ") + e.what());
  }

  // --- MIMIC-CXR-JPG CSVs ---------------------------------------------------------------------------
  std::string meta = csv_row({"dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
                              "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                              "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"});
  std::string split = csv_row({"dicom_id", "study_id", "subject_id", "split"});
  std::vector<std::string> chex_header = {"subject_id", "study_id"};
  chex_header.insert(chex_header.end(), kChexpertColumns.begin(), kChexpertColumns.end());
  std::string chex = csv_row(chex_header);
  for (const auto& r : records) {
    if (r.split == "unseen") continue;
    const std::string side = std::to_string(o.size);
    meta += csv_row({r.dicom_id, r.subject, r.study, "CHEST (PA AND LAT)", "PA", side, side, "21800101",
                     "120000.000", "CHEST (PA AND LAT)", "postero-anterior", "Erect"});
    split += csv_row({r.dicom_id, r.study, r.subject, r.split});
    std::map<std::string, std::string> lab;
    for (const auto& inst : r.study_data.instances) {
      switch (inst.finding) {
        case Finding::kEffusion: lab["Pleural Effusion"] = "1.0"; break;
        case Finding::kPneumothorax: lab["Pneumothorax"] = "1.0"; break;
        case Finding::kConsolidation: lab["Consolidation"] = "1.0"; lab["Pneumonia"] = "1.0"; lab["Lung Opacity"] = "1.0"; break;
        case Finding::kNodule:
        case Finding::kMass: lab["Lung Lesion"] = "1.0"; break;
        case Finding::kAtelectasis: lab["Atelectasis"] = "1.0"; break;
        case Finding::kEdema: lab["Edema"] = "1.0"; break;
        case Finding::kCardiomegaly: lab["Cardiomegaly"] = "1.0"; break;
        case Finding::kGroundGlass: lab["Lung Opacity"] = "1.0"; break;
      }
    }
    if (r.study_data.instances.empty()) lab["No Finding"] = "1.0";
    // Denied findings are negative (0.0) as the CheXpert labeler marks them; unmentioned ones stay blank.
    // Reports deny only findings whose category is also their CheXpert column (effusion, pneumothorax,
    // consolidation, edema, cardiomegaly); a stated finding's 1.0 is never overwritten.
    for (const Finding f : r.study_data.denied) lab.emplace(category(f), "0.0");
    std::vector<std::string> row = {r.subject, r.study};
    for (const auto& col : kChexpertColumns) row.push_back(lab.count(col) ? lab[col] : "");
    chex += csv_row(row);
  }
  write_text((mimic / "mimic-cxr-2.0.0-metadata.csv").string(), meta);
  write_text((mimic / "mimic-cxr-2.0.0-split.csv").string(), split);
  write_text((mimic / "mimic-cxr-2.0.0-chexpert.csv").string(), chex);

  // --- test ground truth in the public formats ------------------------------------------------------
  SynthSummary sum;
  sum.val = n_val;
  std::string mscxr = csv_row({"dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width",
                               "image_height", "split"});
  std::string rsna = csv_row({"patientId", "x", "y", "width", "height", "Target"});
  std::string siim = "ImageId, EncodedPixels\n";
  nlohmann::ordered_json chexloc = nlohmann::ordered_json::object();
  std::string gt_jsonl;
  for (const auto& r : records) {
    if (r.split == "train") ++sum.train;
    if (r.split == "test") ++sum.test;
    if (r.split == "unseen") ++sum.unseen;
    if (r.split != "test" && r.split != "unseen") continue;
    const Study& st = r.study_data;
    nlohmann::ordered_json gt{{"dicom_id", r.dicom_id},
                              {"split", r.split},
                              {"image", r.split == "test" ? "mimic-cxr-jpg/" + r.rel_image : r.rel_image},
                              {"width", st.size},
                              {"height", st.size},
                              {"report", st.report()},
                              {"instances", nlohmann::ordered_json::array()}};
    for (size_t k = 0; k < st.instances.size(); ++k) {
      const Instance& inst = st.instances[k];
      const std::string mask_rel = "ground_truth/masks/" + r.dicom_id + "_" + std::to_string(k) + ".png";
      write_image_file((root / mask_rel).string(), mask_mat(inst.mask, 255), 100);
      nlohmann::ordered_json boxes = nlohmann::ordered_json::array();
      for (const auto& b : inst.boxes) boxes.push_back({b.x, b.y, b.w, b.h});
      gt["instances"].push_back({{"category", category(inst.finding)},
                                 {"side", inst.side},
                                 {"zone", inst.zone},
                                 {"severity", inst.severity},
                                 {"sentence", inst.sentence},
                                 {"boxes_xywh", boxes},
                                 {"mask", mask_rel},
                                 {"pixels", inst.mask.count()}});
      ++sum.test_instances[category(inst.finding)];
    }
    gt_jsonl += gt.dump() + "\n";
    if (r.split != "test") continue;
    const std::string sz = std::to_string(st.size);
    // MS-CXR: one row per box; the boxes of one phrase form its mask.
    for (const auto& inst : st.instances) {
      for (const auto& b : inst.boxes) {
        mscxr += csv_row({r.dicom_id, category(inst.finding), inst.sentence, r.rel_image, std::to_string(b.x),
                          std::to_string(b.y), std::to_string(b.w), std::to_string(b.h), sz, sz, "test"});
      }
    }
    // RSNA Pneumonia: consolidation boxes, Target 0 rows for the others.
    const cv::Mat img = gray_mat(st);
    write_image_file((root / "rsna" / "stage_2_train_images" / (r.dicom_id + ".png")).string(), img, 100);
    bool pneumonia = false;
    for (const auto& inst : st.instances) {
      if (inst.finding != Finding::kConsolidation) continue;
      for (const auto& b : inst.boxes) {
        rsna += csv_row({r.dicom_id, std::to_string(b.x), std::to_string(b.y), std::to_string(b.w), std::to_string(b.h), "1"});
        pneumonia = true;
      }
    }
    if (!pneumonia) rsna += csv_row({r.dicom_id, "", "", "", "", "0"});
    // CheXlocalize: every task for every image, empty masks included.
    const std::string image_id = "patient" + r.subject + "_study1_view1_frontal";
    write_image_file((root / "chexlocalize" / "CheXpert" / "test" / ("patient" + r.subject) / "study1" / "view1_frontal.jpg").string(),
                img, o.jpeg_quality);
    nlohmann::ordered_json tasks = nlohmann::ordered_json::object();
    for (const auto& task : kChexlocalizeTasks) {
      Mask m;
      m.height = m.width = st.size;
      m.pixels.assign(static_cast<size_t>(st.size * st.size), 0);
      for (const auto& inst : st.instances) {
        if (chexlocalize_task(inst.finding) != task) continue;
        for (size_t p = 0; p < m.pixels.size(); ++p) m.pixels[p] |= inst.mask.pixels[p];
      }
      tasks[task] = {{"size", {st.size, st.size}}, {"counts", coco_encode(m)}};
    }
    chexloc[image_id] = tasks;
    // SIIM-ACR: one row per pneumothorax region, " -1" for images without one.
    write_image_file((root / "siim" / "images" / (r.dicom_id + ".png")).string(), img, 100);
    bool ptx = false;
    for (const auto& inst : st.instances) {
      if (inst.finding != Finding::kPneumothorax) continue;
      siim += r.dicom_id + ", " + siim_encode(inst.mask) + "\n";
      ptx = true;
    }
    if (!ptx) siim += r.dicom_id + ", -1\n";
  }
  write_text((root / "ground_truth" / "instances.jsonl").string(), gt_jsonl);
  if (o.n_test > 0) {
    write_text((root / "ms_cxr" / "MS_CXR_Local_Alignment_v1.0.0.csv").string(), mscxr);
    write_text((root / "rsna" / "stage_2_train_labels.csv").string(), rsna);
    write_text((root / "chexlocalize" / "gt_segmentations_test.json").string(), chexloc.dump() + "\n");
    write_text((root / "siim" / "train-rle.csv").string(), siim);
  }
  nlohmann::ordered_json info{{"generator", "afloc synth"},
                              {"seed", o.seed},
                              {"size", o.size},
                              {"train", sum.train},
                              {"validate", sum.val},
                              {"test", sum.test},
                              {"unseen", sum.unseen},
                              {"test_instances", sum.test_instances}};
  write_text((root / "phantom.json").string(), info.dump(2) + "\n");
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return sum;
}

void write_contact_sheet(const std::string& path, const SynthOptions& world, int64_t n) {
  if (n < 1 || n > 400) throw Error("contact sheet: n " + std::to_string(n) + ": expected 1..400");
  const int cols = static_cast<int>(std::ceil(std::sqrt(static_cast<double>(n))));
  const int main_rows = static_cast<int>((n + cols - 1) / cols);
  // Tiles: the world's first n studies, then a row of its unseen set, whose studies follow the
  // train, validate and test studies (write_phantom_world).
  struct Tile {
    int64_t slot, index;
    bool unseen;
  };
  std::vector<Tile> tiles;
  for (int64_t i = 0; i < n; ++i) tiles.push_back({i, i, false});
  const int64_t unseen_first = world.n_train + validation_count(world) + world.n_test;
  for (int64_t j = 0; j < std::min<int64_t>(world.n_unseen, cols); ++j)
    tiles.push_back({static_cast<int64_t>(main_rows) * cols + j, unseen_first + j, true});
  const int rows = main_rows + (tiles.back().unseen ? 1 : 0);
  const int tile = static_cast<int>(world.size), text_h = 64;
  cv::Mat sheet(rows * (tile + text_h), cols * tile, CV_8UC3, cv::Scalar(20, 20, 20));
  const cv::Scalar colours[] = {{60, 60, 255}, {60, 220, 60}, {255, 160, 40}, {0, 220, 255}};
  for (const auto& [slot, index, unseen] : tiles) {
    PhantomOptions po;
    po.size = world.size;
    po.unseen = unseen;
    const Study st = render_study(study_seed(world.seed, index), po);
    cv::Mat colour;
    cv::cvtColor(gray_mat(st), colour, cv::COLOR_GRAY2BGR);
    for (size_t k = 0; k < st.instances.size(); ++k) {
      std::vector<std::vector<cv::Point>> contours;
      cv::findContours(mask_mat(st.instances[k].mask, 255), contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_NONE);
      cv::drawContours(colour, contours, -1, colours[k % 4], 1, cv::LINE_AA);
    }
    const int r = static_cast<int>(slot) / cols, c = static_cast<int>(slot) % cols;
    colour.copyTo(sheet(cv::Rect(c * tile, r * (tile + text_h), tile, tile)));
    // The impression, wrapped to the tile width.
    std::string text = (unseen ? "[unseen] " : "") + st.impression;
    std::vector<std::string> lines;
    const double scale = 0.33;
    std::string line;
    std::istringstream words(text);
    std::string w;
    while (words >> w) {
      const std::string cand = line.empty() ? w : line + " " + w;
      int base = 0;
      if (cv::getTextSize(cand, cv::FONT_HERSHEY_SIMPLEX, scale, 1, &base).width > tile - 6 && !line.empty()) {
        lines.push_back(line);
        line = w;
      } else {
        line = cand;
      }
    }
    if (!line.empty()) lines.push_back(line);
    for (size_t l = 0; l < lines.size() && l < 5; ++l) {
      cv::putText(sheet, lines[l], cv::Point(c * tile + 3, r * (tile + text_h) + tile + 12 + static_cast<int>(l) * 12),
                  cv::FONT_HERSHEY_SIMPLEX, scale, cv::Scalar(230, 230, 230), 1, cv::LINE_AA);
    }
  }
  write_image_file(path, sheet, 95);
}

}  // namespace afloc::data::phantom
