#include "afloc/data/datasets.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "afloc/common/error.h"
#include "afloc/common/parallel.h"
#include "afloc/data/csv.h"

namespace fs = std::filesystem;

namespace afloc::data {
namespace {

std::string find_csv(const std::string& dir, const std::string& name) {
  const std::string p = mimic_csv_path(dir, name);
  if (p.empty()) throw Error((fs::path(dir) / (name + ".csv")).string() + ": not found (nor .csv.gz)");
  return p;
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    i += len;
  }
  return true;
}

bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); });
}

std::string resolve(const std::string& root, const std::string& p) {
  if (p.empty() || fs::path(p).is_absolute() || root.empty()) return p;
  return (fs::path(root) / p).string();
}

}  // namespace

std::string mimic_csv_path(const std::string& root, const std::string& name) {
  for (const std::string ext : {".csv", ".csv.gz"}) {
    const std::string p = (fs::path(root) / (name + ext)).string();
    if (is_regular_file(p)) return p;
  }
  return "";
}

void SkipLog::add(const std::string& reason, const std::string& example) {
  ++counts[reason];
  auto& ex = examples[reason];
  if (ex.size() < 3) ex.push_back(example);
}

void SkipLog::merge(const SkipLog& other) {
  for (const auto& [reason, n] : other.counts) {
    counts[reason] += n;
    auto& ex = examples[reason];
    const auto it = other.examples.find(reason);
    if (it == other.examples.end()) continue;
    for (const auto& e : it->second)
      if (ex.size() < 3) ex.push_back(e);
  }
}

int64_t SkipLog::total() const {
  int64_t n = 0;
  for (const auto& [k, v] : counts) n += v;
  return n;
}

std::string SkipLog::summary() const {
  if (counts.empty()) return "none skipped";
  std::string s = std::to_string(total()) + " skipped:";
  bool first = true;
  for (const auto& [reason, n] : counts) {
    s += (first ? " " : ", ") + std::to_string(n) + " " + reason;
    const auto it = examples.find(reason);
    if (it != examples.end() && !it->second.empty()) s += " (e.g. " + it->second.front() + ")";
    first = false;
  }
  return s;
}

namespace {

// Which of the two sections a MIMIC-CXR header names: kFindings, kImpression or kOther. Real
// reports spell them many ways (CONCLUSION, FINDINGS AND IMPRESSION, IMPRESSON, "PA AND LATERAL
// VIEWS OF THE CHEST"). The spellings and rules are those of the dataset's own section parser
// (MIT-LCP/mimic-cxr, txt/section_parser.py), the reference that MIMIC-CXR's CheXpert labels and
// most pretraining pipelines were made with; no Debian library parses report sections.
enum class Section { kFindings, kImpression, kOther };

Section section_kind(const std::string& header) {
  std::string h;
  for (unsigned char c : header) h += static_cast<char>(std::tolower(c));
  const size_t a = h.find_first_not_of(' '), z = h.find_last_not_of(' ');
  h = a == std::string::npos ? "" : h.substr(a, z - a + 1);
  // Headers seen in MIMIC-CXR, with the section each one is (the parser's table; its other
  // entries name sections such as indication or comparison, listed so that the rules below do not
  // apply to them).
  static const std::unordered_map<std::string, Section> known = [] {
    std::unordered_map<std::string, Section> m;
    for (const char* k : {"impression", "conclusion", "findings and impression", "findings/impression", "findings/ impression",
                          "ndication", "impresson", "imprression", "imoression", "impressoin", "imprssion", "impresion",
                          "imperssion", "mpression", "impession"})
      m[k] = Section::kImpression;
    for (const char* k : {"findings", "chest, two views", "finding", "findins", "findindgs", "findgings", "findngs",
                          "findnings", "finidngs", "reference findings"})
      m[k] = Section::kFindings;
    for (const char* k : {"preamble", "comparison", "indication", "examination", "technique", "history", "comparisons",
                          "clinical history", "reason for examination", "notification", "reason for exam",
                          "clinical information", "exam", "clinical indication", "recommendation(s)", "type of examination",
                          "reference exam", "patient history", "addendum", "comparison exam", "date", "comment", "wet read",
                          "comparison film", "recommendations", "pfi", "recommendation", "wetread", "idication",
                          "comparision", "comparsion", "comparrison", "comparisions", "concusion", "coinclusion"})
      m[k] = Section::kOther;
    return m;
  }();
  if (const auto it = known.find(h); it != known.end()) return it->second;
  // Then by the main section a header mentions, in this order...
  if (h.find("impression") != std::string::npos) return Section::kImpression;
  if (h.find("findings") != std::string::npos) return Section::kFindings;
  for (const char* other : {"history", "comparison", "addendum"}) {
    if (h.find(other) != std::string::npos) return Section::kOther;
  }
  // ... and a header that describes the whole study is its findings.
  for (const char* view : {"chest", "portable", "pa and lateral", "lateral and pa", "ap and lateral", "lateral and ap",
                           "frontal and", "two views", "frontal view", "pa view", "ap view", "one view", "lateral view",
                           "bone window", "frontal upright", "frontal semi-upright", "ribs", "pa and lat"}) {
    if (h.find(view) != std::string::npos) return Section::kFindings;
  }
  return Section::kOther;
}

}  // namespace

std::string report_sections(const std::string& report, bool last_paragraph) {
  // Walk the lines; a header is an upper-case run (letters, spaces and ( ) / , & -) ending in ':'
  // at the start of a line, possibly followed by text on the same line.
  Section current = Section::kOther;
  std::string findings, impression;
  std::vector<std::string> last_section;  // the lines of the section being read (first: the header line's rest)
  std::istringstream in(report);
  std::string line;
  while (std::getline(in, line)) {
    size_t b = line.find_first_not_of(" \t\r");
    std::string rest = b == std::string::npos ? "" : line.substr(b);
    const size_t colon = rest.find(':');
    if (colon != std::string::npos && colon > 1) {
      const std::string head = rest.substr(0, colon);
      const bool is_header = std::all_of(head.begin(), head.end(), [](unsigned char c) {
        return std::isupper(c) || c == ' ' || c == '/' || c == '&' || c == '-' || c == '(' || c == ')' || c == ',';
      }) && std::any_of(head.begin(), head.end(), [](unsigned char c) { return std::isupper(c); });
      if (is_header) {
        current = section_kind(head);
        rest = rest.substr(colon + 1);
        last_section.clear();
      }
    }
    if (current == Section::kFindings) findings += " " + rest;
    if (current == Section::kImpression) impression += " " + rest;
    last_section.push_back(rest);
  }
  auto trim = [](std::string s) {
    const size_t a = s.find_first_not_of(" \t\r\n");
    if (a == std::string::npos) return std::string();
    const size_t z = s.find_last_not_of(" \t\r\n");
    return s.substr(a, z - a + 1);
  };
  findings = trim(findings);
  impression = trim(impression);
  if (findings.empty() && impression.empty() && last_paragraph) {
    // MIMIC-CXR's section parser: a report with neither section keeps, as its "last_paragraph",
    // what follows the first blank line after text in its last section (simple reports are a
    // header or two followed by a few paragraphs).
    std::string after;
    bool text = false, blank_seen = false;
    for (const auto& l : last_section) {
      const bool is_blank = trim(l).empty();
      if (blank_seen) after += " " + l;
      else if (is_blank && text) blank_seen = true;
      text = text || !is_blank;
    }
    return trim(after);
  }
  if (findings.empty()) return impression;
  if (impression.empty()) return findings;
  return findings + " " + impression;
}

std::vector<int64_t> label_keys(const std::vector<Sample>& samples) {
  std::vector<int64_t> keys(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) {
    const std::string& l = samples[i].labels;
    if (l.empty()) {
      keys[i] = -1 - static_cast<int64_t>(i);
      continue;
    }
    uint64_t h = 14695981039346656037ULL;  // FNV-1a: stable across processes, unlike std::hash
    for (const unsigned char c : l) h = (h ^ c) * 1099511628211ULL;
    keys[i] = static_cast<int64_t>(h >> 1);
  }
  return keys;
}

PairList read_mimic(const MimicOptions& o) {
  if (o.root.empty()) throw Error("MIMIC-CXR: the dataset root is not set");
  const std::string reports_root = o.reports_root.empty() ? o.root : o.reports_root;
  const CsvTable meta = read_csv(find_csv(o.root, "mimic-cxr-2.0.0-metadata"));
  const CsvTable split = read_csv(find_csv(o.root, "mimic-cxr-2.0.0-split"));
  const size_t s_dicom = split.column("dicom_id"), s_split = split.column("split");
  std::unordered_map<std::string, std::string> split_of;
  for (size_t r = 0; r < split.rows.size(); ++r) split_of[split.at(r, s_dicom)] = split.at(r, s_split);

  // Report labels by study, as one key: the columns marked positive (1) and, apart, uncertain (-1).
  // Negative (0) and blank cells both say absent, so they do not tell studies apart.
  std::unordered_map<std::string, std::string> labels_of;
  if (!o.labels_csv.empty()) {
    const CsvTable lab = read_csv(o.labels_csv);
    const size_t l_study = lab.column("study_id"), l_subject = lab.find_column("subject_id");
    for (size_t r = 0; r < lab.rows.size(); ++r) {
      std::string key;
      for (size_t c = 0; c < lab.header.size(); ++c) {
        if (c == l_study || c == l_subject) continue;
        const std::string& v = lab.at(r, c);
        if (v == "1" || v == "1.0") key += lab.header[c] + ";";
        else if (v == "-1" || v == "-1.0") key += "?" + lab.header[c] + ";";
      }
      labels_of[lab.at(r, l_study)] = key.empty() ? "-" : key;
    }
  }
  const size_t m_dicom = meta.column("dicom_id"), m_subject = meta.column("subject_id"),
               m_study = meta.column("study_id"), m_view = meta.column("ViewPosition");
  PairList out;
  // 1. The rows kept by split and view, with their files' paths; a study's report serves all its
  //    images, so reports are read once per study.
  struct Row {
    size_t meta_row, study;
    std::string image;
  };
  struct Study {
    std::string report_path, text, skip;  // skip: why the report is unusable ("" = usable)
    std::vector<size_t> rows;             // indices into `rows`
  };
  std::vector<Row> rows;
  std::vector<Study> studies;
  std::unordered_map<std::string, size_t> study_of;
  for (size_t r = 0; r < meta.rows.size(); ++r) {
    const std::string& dicom = meta.at(r, m_dicom);
    const std::string& subject = meta.at(r, m_subject);
    const std::string& study = meta.at(r, m_study);
    if (dicom.empty() || subject.size() < 2 || study.empty()) {
      out.skipped.add("malformed row", meta.path + " row " + std::to_string(r + 2));
      continue;
    }
    const auto sp = split_of.find(dicom);
    if (sp == split_of.end()) {
      out.skipped.add("not in split.csv", dicom);
      continue;
    }
    if (std::find(o.splits.begin(), o.splits.end(), sp->second) == o.splits.end()) continue;
    if (!o.views.empty() && std::find(o.views.begin(), o.views.end(), meta.at(r, m_view)) == o.views.end()) continue;
    const std::string pdir = "files/p" + subject.substr(0, 2) + "/p" + subject;
    std::string report_path = (fs::path(reports_root) / pdir / ("s" + study + ".txt")).string();
    auto [it, added] = study_of.emplace(report_path, studies.size());
    if (added) studies.push_back({std::move(report_path), "", "", {}});
    studies[it->second].rows.push_back(rows.size());
    rows.push_back({r, it->second, (fs::path(o.root) / pdir / ("s" + study) / (dicom + ".jpg")).string()});
  }
  // 2. The file system, a study at a time: which images exist, and the report's sections when one
  //    does (a study with no image left is not read). These calls wait on the device, not the CPU,
  //    so more threads than cores overlap the waits of a cold disk or a network file system (a
  //    MIMIC-sized fixture, cold: 37.5 s on one thread, 11.2 s on 16; docs/data.md).
  std::vector<char> image_ok(rows.size(), 1);
  std::string label = "index MIMIC-CXR-JPG";
  for (size_t i = 0; i < o.splits.size(); ++i) label += (i ? "+" : " ") + o.splits[i];
  parallel_for(studies.size(), o.io_threads, label, "study", o.progress, [&](size_t k) {
    Study& st = studies[k];
    bool any = false;
    for (size_t i : st.rows) {
      if (o.check_images) image_ok[i] = is_regular_file(rows[i].image) ? 1 : 0;
      any = any || image_ok[i];
    }
    if (!any || !o.read_reports) return;
    if (!is_regular_file(st.report_path)) {
      st.skip = "missing report";
      return;
    }
    const std::string raw = read_file(st.report_path);
    if (!valid_utf8(raw)) {
      st.skip = "report not UTF-8";
      return;
    }
    st.text = report_sections(raw, o.last_paragraph);
    if (blank(st.text)) {
      st.skip = blank(raw)            ? "empty report"
                : o.last_paragraph    ? "report without FINDINGS/IMPRESSION or a last paragraph"
                                      : "report without FINDINGS/IMPRESSION";
    }
  });
  // 3. The pairs and skips in the metadata's row order.
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    const Study& st = studies[row.study];
    const std::string& dicom = meta.at(row.meta_row, m_dicom);
    if (!image_ok[i]) {
      out.skipped.add("missing image", row.image);
    } else if (!st.skip.empty()) {
      out.skipped.add(st.skip, st.report_path);
    } else {
      const auto lab = labels_of.find(meta.at(row.meta_row, m_study));
      out.samples.push_back({dicom, row.image, st.text, split_of.at(dicom), lab == labels_of.end() ? "" : lab->second});
    }
  }
  return out;
}

PairList read_manifest(const ManifestOptions& o) {
  const std::string root = o.root.empty() ? fs::path(o.path).parent_path().string() : o.root;
  PairList out;
  // Rows are gathered first and their images checked together (parallel_for), then kept or skipped
  // in the file's order.
  struct Row {
    Sample sample;
    std::string where, skip;  // skip: decided before the image check ("" = none yet)
  };
  std::vector<Row> rows;
  auto keep = [&](const std::string& id, const std::string& image, const std::string& report, std::string split,
                  const std::string& labels, const std::string& where) {
    if (split.empty()) split = "train";
    if (std::find(o.splits.begin(), o.splits.end(), split) == o.splits.end()) return;
    Row row{{id.empty() ? image : id, resolve(root, image), report, split, labels}, where, ""};
    if (image.empty()) row.skip = "no image path";
    rows.push_back(std::move(row));
  };
  auto finish = [&] {
    std::vector<char> image_ok(rows.size(), 1);
    if (o.check_images) {
      parallel_for(rows.size(), o.io_threads, "check images", "img", o.progress, [&](size_t i) {
        if (rows[i].skip.empty()) image_ok[i] = is_regular_file(rows[i].sample.image) ? 1 : 0;
      });
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      Row& row = rows[i];
      if (!row.skip.empty()) out.skipped.add(row.skip, row.where);
      else if (!image_ok[i]) out.skipped.add("missing image", row.sample.image);
      else if (!valid_utf8(row.sample.report)) out.skipped.add("report not UTF-8", row.where);
      else if (blank(row.sample.report)) out.skipped.add("empty report", row.where);
      else out.samples.push_back(std::move(row.sample));
    }
    return out;
  };
  const std::string ext = fs::path(o.path).extension().string();
  if (ext == ".jsonl" || ext == ".json" || (ext == ".gz" && o.path.find(".jsonl") != std::string::npos)) {
    std::istringstream in(read_text_maybe_gz(o.path));
    std::string line;
    int64_t n = 0;
    while (std::getline(in, line)) {
      ++n;
      if (blank(line)) continue;
      const std::string where = o.path + " line " + std::to_string(n);
      // A line that cannot be read has no known split: it is counted by every split's reading.
      if (!valid_utf8(line)) {
        out.skipped.add("line not UTF-8 (split unknown)", where);
        continue;
      }
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const std::exception&) {
        out.skipped.add("invalid JSON line (split unknown)", where);
        continue;
      }
      if (!j.is_object()) {
        out.skipped.add("JSON line not an object (split unknown)", where);
        continue;
      }
      std::string bad_field;
      auto str = [&](std::initializer_list<const char*> keys) {
        for (const char* k : keys) {
          if (!j.contains(k) || j[k].is_null()) continue;
          if (j[k].is_string()) return j[k].get<std::string>();
          if (bad_field.empty()) bad_field = k;
        }
        return std::string();
      };
      const std::string id = str({"id"}), image = str({"image", "path"}), report = str({"report", "text"}),
                        split = str({"split"}), labels = str({"labels"});
      if (!bad_field.empty()) {
        out.skipped.add("field not a string (split unknown)", where + " (\"" + bad_field + "\")");
        continue;
      }
      keep(id, image, report, split, labels, where);
    }
    return finish();
  }
  const CsvTable t = read_csv(o.path);
  size_t c_image = t.find_column("image");
  if (c_image == std::string::npos) c_image = t.find_column("path");
  size_t c_report = t.find_column("report");
  if (c_report == std::string::npos) c_report = t.find_column("text");
  if (c_image == std::string::npos) t.column("image");    // throws, naming the columns present
  if (c_report == std::string::npos) t.column("report");  // idem
  const size_t c_split = t.find_column("split"), c_id = t.find_column("id"), c_labels = t.find_column("labels");
  for (size_t r = 0; r < t.rows.size(); ++r) {
    keep(c_id == std::string::npos ? "" : t.at(r, c_id), t.at(r, c_image), t.at(r, c_report),
         c_split == std::string::npos ? "" : t.at(r, c_split), c_labels == std::string::npos ? "" : t.at(r, c_labels),
         o.path + " row " + std::to_string(r + 2));
  }
  return finish();
}

}  // namespace afloc::data
