#include "afloc/infer/prompt_encoder.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "afloc/common/error.h"
#include "afloc/common/log.h"

namespace fs = std::filesystem;

namespace afloc::infer {
namespace {

// Cache file layout (little-endian): magic "AFLOCPE1", u32 D; then records of
// u32 n, n x i32 token ids, D x f32. Records are appended; a truncated tail (a run killed while
// writing) is ignored with a warning.
constexpr char kMagic[8] = {'A', 'F', 'L', 'O', 'C', 'P', 'E', '1'};

uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdULL;
}

uint64_t hash_bytes(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = mix(h, w);
  }
  uint64_t tail = 0;
  std::memcpy(&tail, p + i, n - i);
  return mix(h, tail ^ (n << 56));
}

std::string hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

std::string default_prompt_cache_dir() {
  if (const char* d = std::getenv("AFLOC_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return (fs::path(d) / "afloc").string();
  if (const char* d = std::getenv("HOME"); d && *d) return (fs::path(d) / ".cache" / "afloc").string();
  return "";
}

uint64_t weights_hash(const torch::nn::Module& module) {
  uint64_t h = 0x243f6a8885a308d3ULL;
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    h = hash_bytes(h, name.data(), name.size());
    for (int64_t s : t.sizes()) h = mix(h, static_cast<uint64_t>(s));
    h = mix(h, static_cast<uint64_t>(t.scalar_type()));
    const torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    h = hash_bytes(h, c.data_ptr(), static_cast<size_t>(c.nbytes()));
  };
  for (const auto& p : module.named_parameters()) add(p.key(), p.value());
  for (const auto& b : module.named_buffers()) add(b.key(), b.value());
  return h;
}

PromptEncoder::PromptEncoder(model::AflocModel& net, std::string cache_dir, int64_t batch) : net_(net), batch_(batch) {
  TORCH_CHECK(batch_ >= 1, "prompt batch must be >= 1");
  if (!cache_dir.empty()) file_ = (fs::path(cache_dir) / ("prompts-" + hex16(weights_hash(*net_->text_encoder)) + ".bin")).string();
}

void PromptEncoder::load_disk_cache() {
  disk_loaded_ = true;
  if (file_.empty() || !fs::exists(file_)) return;
  std::ifstream in(file_, std::ios::binary);
  char magic[8];
  uint32_t d = 0;
  in.read(magic, 8);
  in.read(reinterpret_cast<char*>(&d), 4);
  if (!in || std::memcmp(magic, kMagic, 8) != 0) {
    log::warn(file_ + ": not an afloc prompt cache; ignored (it will be rewritten)");
    fs::remove(file_);
    return;
  }
  int64_t n_records = 0;
  std::streamoff good = in.tellg();
  const auto size = static_cast<std::streamoff>(fs::file_size(file_));
  while (good < size) {
    uint32_t n = 0;
    std::vector<int32_t> ids;
    torch::Tensor v = torch::empty({static_cast<int64_t>(d)}, torch::kFloat);
    bool ok = static_cast<bool>(in.read(reinterpret_cast<char*>(&n), 4)) && n <= 4096;
    if (ok) {
      ids.resize(n);
      ok = in.read(reinterpret_cast<char*>(ids.data()), static_cast<std::streamsize>(n) * 4) &&
           in.read(reinterpret_cast<char*>(v.data_ptr<float>()), static_cast<std::streamsize>(d) * 4);
    }
    if (!ok) {
      // A run killed while appending: cut the torn tail so later records stay readable.
      log::warn(file_ + ": torn record after " + std::to_string(n_records) + " prompts; the rest is recomputed");
      in.close();
      std::error_code ec;
      fs::resize_file(file_, static_cast<uintmax_t>(good), ec);
      break;
    }
    memory_[std::move(ids)] = v;
    ++n_records;
    good = in.tellg();
  }
  from_disk_ = n_records;
}

void PromptEncoder::append_disk_cache(const std::vector<std::vector<int32_t>>& keys, const torch::Tensor& vectors) {
  if (file_.empty()) return;
  const torch::Tensor v = vectors.to(torch::kCPU, torch::kFloat).contiguous();
  const auto d = static_cast<uint32_t>(v.size(1));
  try {
    fs::create_directories(fs::path(file_).parent_path());
    // One write(2) per record on an O_APPEND descriptor: concurrent runs sharing the cache
    // interleave whole records, never bytes of two records.
    const int fd = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) throw Error(std::strerror(errno));
    auto put = [&](const std::string& bytes) {
      if (::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
        const std::string why = std::strerror(errno);
        ::close(fd);
        throw Error(why);
      }
    };
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size == 0) {
      std::string head(kMagic, 8);
      head.append(reinterpret_cast<const char*>(&d), 4);
      put(head);
    }
    for (size_t i = 0; i < keys.size(); ++i) {
      const auto n = static_cast<uint32_t>(keys[i].size());
      std::string rec(reinterpret_cast<const char*>(&n), 4);
      rec.append(reinterpret_cast<const char*>(keys[i].data()), static_cast<size_t>(n) * 4);
      rec.append(reinterpret_cast<const char*>(v[static_cast<int64_t>(i)].data_ptr<float>()), static_cast<size_t>(d) * 4);
      put(rec);
    }
    ::close(fd);
  } catch (const std::exception& e) {
    // The cache is an optimisation: a read-only or full disk costs time, never the results.
    log::warn(file_ + ": cannot write the prompt cache (" + std::string(e.what()) + ")");
  }
}

torch::Tensor PromptEncoder::encode(const std::vector<std::string>& prompts) {
  TORCH_CHECK(!prompts.empty(), "no prompts to encode");
  if (!disk_loaded_) load_disk_cache();
  const model::TokenBatch tokens = net_->tokenize(prompts, model::TextMode::kPrompt);
  const torch::Tensor ids = tokens.ids.to(torch::kInt).contiguous();
  std::vector<std::vector<int32_t>> keys;
  for (int64_t i = 0; i < ids.size(0); ++i) {
    const int32_t* p = ids[i].data_ptr<int32_t>();
    keys.emplace_back(p, p + ids.size(1));
  }
  // Encode each missing prompt once, in batches.
  std::vector<int64_t> missing;
  std::set<std::vector<int32_t>> queued;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (memory_.count(keys[i])) ++hits_;
    else if (queued.insert(keys[i]).second) missing.push_back(static_cast<int64_t>(i));
  }
  for (size_t start = 0; start < missing.size(); start += static_cast<size_t>(batch_)) {
    const size_t end = std::min(missing.size(), start + static_cast<size_t>(batch_));
    const torch::Tensor rows = torch::tensor(std::vector<int64_t>(missing.begin() + static_cast<std::ptrdiff_t>(start),
                                                                  missing.begin() + static_cast<std::ptrdiff_t>(end)));
    model::TokenBatch sub{tokens.ids.index_select(0, rows), tokens.attention_mask.index_select(0, rows),
                          tokens.token_type_ids.index_select(0, rows), {}};
    torch::Tensor report;
    {
      torch::InferenceMode guard;
      report = net_->encode_text(sub.to(net_->device())).report.to(torch::kCPU, torch::kFloat);
    }
    std::vector<std::vector<int32_t>> new_keys;
    for (size_t k = start; k < end; ++k) {
      const auto& key = keys[static_cast<size_t>(missing[k])];
      memory_[key] = report[static_cast<int64_t>(k - start)].clone();
      new_keys.push_back(key);
    }
    computed_ += static_cast<int64_t>(end - start);
    append_disk_cache(new_keys, report);
  }
  std::vector<torch::Tensor> out;
  for (const auto& k : keys) out.push_back(memory_.at(k));
  return torch::stack(out).to(net_->device());
}

}  // namespace afloc::infer
