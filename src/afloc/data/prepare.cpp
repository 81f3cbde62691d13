#include "afloc/data/prepare.h"

#include <opencv2/core.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "afloc/common/error.h"
#include "afloc/common/parallel.h"
#include "afloc/common/version.h"
#include "afloc/data/csv.h"
#include "afloc/data/image.h"
#include "afloc/data/image_file.h"

namespace fs = std::filesystem;

namespace afloc::data {
namespace {

const char* kManifest = "manifest.csv";
const char* kRecord = "prepare.json";
const char* kUnreadable = "unreadable.csv";

// What an earlier run recorded in `out` (null = nothing recorded).
nlohmann::json earlier_record(const fs::path& out) {
  const fs::path rec = out / kRecord;
  if (!is_regular_file(rec.string())) return nullptr;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(rec.string()));
  } catch (const std::exception& e) {
    throw Error(rec.string() + ": not a prepare record (" + e.what() + "); remove it or choose another --out");
  }
  if (!j.is_object() || !j.contains("size") || !j["size"].is_number_integer())
    throw Error(rec.string() + ": no integer \"size\"; remove it or choose another --out");
  return j;
}

}  // namespace

std::string prepared_image_path(const std::string& image, const std::string& source_root) {
  fs::path p(image);
  if (!source_root.empty()) {
    const fs::path rel = fs::absolute(p).lexically_normal().lexically_relative(fs::absolute(source_root).lexically_normal());
    if (!rel.empty() && *rel.begin() != ".." && !rel.is_absolute()) p = fs::path("images") / rel;
    else p = fs::path("images") / "external" / p.filename();
  } else {
    p = fs::path("images") / "external" / p.filename();
  }
  p.replace_extension(".png");
  return p.generic_string();
}

PrepareResult prepare_images(const std::vector<Sample>& samples, const PrepareOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.out.empty()) throw Error("prepare: no output folder");
  if (o.size < 16 || o.size > 8192) throw Error("prepare: size " + std::to_string(o.size) + " is outside 16..8192");
  const fs::path out(o.out);
  // Images already in `out` are kept (a resumed run), so they must be of the same sources and size.
  const nlohmann::json before = earlier_record(out);
  if (!before.is_null()) {
    const auto size = before["size"].get<int64_t>();
    if (size != o.size)
      throw Error(o.out + " holds images prepared at size " + std::to_string(size) + ", not " + std::to_string(o.size) +
                  ": choose another --out (or remove it)");
    if (before.value("source", nlohmann::json::object()) != nlohmann::json(o.source))
      throw Error(o.out + " holds images prepared from other data (" + before.value("source", nlohmann::json::object()).dump() +
                  "): choose another --out (or remove it)");
  }

  // One output per distinct source image, named before any work so that the names do not depend
  // on the thread count; two sources that would share a name (a.jpg, a.png) get -2, -3, ...
  std::unordered_map<std::string, size_t> job_of;  // source path -> job
  std::vector<std::string> sources, outputs;
  std::vector<size_t> sample_job(samples.size());
  std::set<std::string> taken;
  for (size_t i = 0; i < samples.size(); ++i) {
    const auto [it, fresh] = job_of.emplace(samples[i].image, sources.size());
    if (fresh) {
      std::string name = prepared_image_path(samples[i].image, o.source_root);
      if (taken.count(name)) {
        const std::string stem = name.substr(0, name.size() - 4);
        for (int k = 2; taken.count(name); ++k) name = stem + "-" + std::to_string(k) + ".png";
      }
      taken.insert(name);
      sources.push_back(samples[i].image);
      outputs.push_back(name);
    }
    sample_job[i] = it->second;
  }

  // The record first (size and source), so that a run cut short is recognised when resumed.
  fs::create_directories(out);
  nlohmann::ordered_json rec{{"afloc_version", version()}, {"size", o.size}, {"source", o.source},
                             {"complete", false}};
  write_file_atomic((out / kRecord).string(), rec.dump(2) + "\n");
  // A manifest from an earlier complete run is removed before images change under it.
  fs::remove(out / kManifest);

  std::vector<std::string> error(sources.size());
  std::vector<int64_t> bytes(sources.size(), 0);
  std::vector<char> reused(sources.size(), 0);
  parallel_for(sources.size(), o.threads, "prepare " + std::to_string(o.size) + "px", "img", o.progress, [&](size_t j) {
    const std::string dst = (out / outputs[j]).string();
    std::error_code ec;
    const auto existing = fs::file_size(dst, ec);
    if (!ec && existing > 0) {
      reused[j] = 1;
      bytes[j] = static_cast<int64_t>(existing);
      return;
    }
    Gray8 g;
    try {
      g = resize_pad(read_gray8(sources[j], o.read), o.size);
    } catch (const std::exception& e) {
      error[j] = e.what();
      return;
    }
    // Written whole or not at all; disk full or unwritable: fatal, the images so far are kept.
    write_image_file(dst, cv::Mat(static_cast<int>(g.height), static_cast<int>(g.width), CV_8UC1, g.pixels.data()));
    bytes[j] = static_cast<int64_t>(fs::file_size(dst));
  });

  PrepareResult r;
  r.skipped = o.read_skipped;
  for (size_t j = 0; j < sources.size(); ++j) {
    if (!error[j].empty()) continue;
    (reused[j] ? r.reused : r.written) += 1;
    r.bytes += bytes[j];
  }
  // The labels column only when the pairs have labels (data.labels), so that the manifest trains as they do.
  const bool labels = std::any_of(samples.begin(), samples.end(), [](const Sample& s) { return !s.labels.empty(); });
  std::vector<std::string> header = {"id", "image", "report", "split"};
  if (labels) header.push_back("labels");
  std::string manifest = csv_row(header);
  for (size_t i = 0; i < samples.size(); ++i) {
    const size_t j = sample_job[i];
    if (!error[j].empty()) {
      r.skipped.add("unreadable image", error[j]);
      continue;
    }
    std::vector<std::string> row = {samples[i].id, outputs[j], samples[i].report, samples[i].split};
    if (labels) row.push_back(samples[i].labels);
    manifest += csv_row(row);
    r.per_split[samples[i].split] += 1;
  }
  // Every unreadable image with its error (the skip log keeps three examples), or none.
  std::string unreadable = csv_row({"image", "error"});
  int64_t n_unreadable = 0;
  for (size_t j = 0; j < sources.size(); ++j) {
    if (error[j].empty()) continue;
    unreadable += csv_row({sources[j], error[j]});
    ++n_unreadable;
  }
  if (n_unreadable > 0) write_file_atomic((out / kUnreadable).string(), unreadable);
  else fs::remove(out / kUnreadable);
  if (r.per_split.empty())
    throw Error("prepare: no image of the " + std::to_string(samples.size()) + " pairs could be read (" + r.skipped.summary() + ")");
  r.manifest = (out / kManifest).string();
  write_file_atomic(r.manifest, manifest);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  rec["complete"] = true;
  rec["pairs"] = r.per_split;
  rec["images"] = {{"written", r.written}, {"reused", r.reused}, {"bytes", r.bytes}};
  rec["skipped"] = r.skipped.counts;
  rec["skipped_examples"] = r.skipped.examples;
  rec["seconds"] = r.seconds;
  write_file_atomic((out / kRecord).string(), rec.dump(2) + "\n");
  return r;
}

}  // namespace afloc::data
