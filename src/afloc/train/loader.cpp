#include "afloc/train/loader.h"

#include <chrono>

#include "afloc/common/error.h"
#include "afloc/common/log.h"
#include "afloc/common/seed.h"
#include "afloc/text/clean.h"

namespace afloc::train {
namespace {


}  // namespace

PairData prepare_pairs(const std::vector<data::Sample>& samples, data::SkipLog& skipped) {
  PairData d;
  for (const auto& s : samples) {
    auto sents = text::clean_sentences(s.report);
    if (sents.empty()) {
      skipped.add("report without a usable sentence", s.id);
      continue;
    }
    d.samples.push_back(s);
    d.sentences.push_back(std::move(sents));
  }
  return d;
}

BatchLoader::BatchLoader(const PairData& data, LoaderOptions options,
                         std::function<model::TokenBatch(const std::vector<std::string>&)> tokenize)
    : data_(data), o_(std::move(options)), tokenize_(std::move(tokenize)) {
  TORCH_CHECK(o_.batch_size >= 1 && o_.world >= 1 && o_.rank >= 0 && o_.rank < o_.world, "bad loader options");
  const int64_t per_image = o_.image_size * o_.image_size;
  cache_limit_ = per_image > 0 ? std::min<int64_t>(static_cast<int64_t>(data_.samples.size()), o_.cache_bytes / per_image) : 0;
  cache_.resize(static_cast<size_t>(cache_limit_));
  cached_.assign(static_cast<size_t>(cache_limit_), 0);
}

BatchLoader::~BatchLoader() { stop_workers(); }

int64_t BatchLoader::batches_per_epoch() const {
  return static_cast<int64_t>(data_.samples.size()) / (o_.batch_size * o_.world);
}

std::vector<int64_t> BatchLoader::epoch_order(int64_t epoch) const {
  const auto n = static_cast<int64_t>(data_.samples.size());
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  if (!o_.shuffle) return order;
  // Fisher-Yates with our own generator: std::shuffle differs between standard libraries.
  uint64_t state = mix_seed(o_.seed, static_cast<uint64_t>(epoch) + 1);
  for (int64_t i = n - 1; i > 0; --i) {
    state = mix_seed(state, static_cast<uint64_t>(i));
    const auto j = static_cast<int64_t>(index_below(state, static_cast<uint64_t>(i + 1)));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

void BatchLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void BatchLoader::start_epoch(int64_t epoch, int64_t first_batch) {
  stop_workers();
  std::lock_guard<std::mutex> lock(mu_);
  stop_ = false;
  epoch_ = epoch;
  order_ = epoch_order(epoch);
  next_build_ = next_take_ = std::max<int64_t>(0, first_batch);
  end_ = batches_per_epoch();
  ready_.clear();
  error_.clear();
  for (int i = 0; i < o_.workers; ++i) threads_.emplace_back([this] { worker_loop(); });
}

void BatchLoader::worker_loop() {
  // Decoding and tokenizing are single-threaded per batch; parallelism comes from the workers.
  while (true) {
    int64_t index = 0, epoch = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || (next_build_ < end_ && next_build_ < next_take_ + o_.prefetch); });
      if (stop_) return;
      index = next_build_++;
      epoch = epoch_;
    }
    Batch b;
    std::string err;
    try {
      b = build(epoch, index);
    } catch (const std::exception& e) {
      err = e.what();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!err.empty() && error_.empty()) error_ = err;
      ready_[index] = std::move(b);
    }
    cv_.notify_all();
  }
}

data::Gray8 BatchLoader::load_image(int64_t sample) {
  const bool cacheable = sample < cache_limit_;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_[sample % 64]);
    if (cached_[static_cast<size_t>(sample)]) return cache_[static_cast<size_t>(sample)];
  }
  data::Gray8 g = data::resize_pad(data::read_gray8(data_.samples[static_cast<size_t>(sample)].image, o_.read), o_.image_size);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_[sample % 64]);
    cache_[static_cast<size_t>(sample)] = g;
    cached_[static_cast<size_t>(sample)] = 1;
  }
  return g;
}

Batch BatchLoader::build(int64_t epoch, int64_t index) {
  Batch b;
  b.epoch = epoch;
  b.index = index;
  const int64_t bs = o_.batch_size, s = o_.image_size;
  b.images = torch::empty({bs, 3, s, s});
  std::vector<std::string> captions;
  const int64_t base = (index * o_.world + o_.rank) * bs;
  const auto n = static_cast<int64_t>(data_.samples.size());
  for (int64_t k = 0; k < bs; ++k) {
    int64_t sample = order_[static_cast<size_t>(base + k)];
    data::Gray8 g;
    // An unreadable image is replaced by a deterministic other sample (counted and logged once).
    // A sample known to be unreadable is not read again in later epochs: each failed read can cost
    // a DICOM helper restart or a network round trip, and the replacement is the same either way.
    for (int attempt = 0;; ++attempt) {
      std::string why;
      {
        std::lock_guard<std::mutex> lock(bad_mu_);
        auto known = bad_.find(sample);
        if (known != bad_.end()) why = known->second;
      }
      if (why.empty()) {
        try {
          g = load_image(sample);
          break;
        } catch (const std::exception& e) {
          why = *e.what() ? e.what() : "unreadable";
          std::lock_guard<std::mutex> lock(bad_mu_);
          if (bad_.emplace(sample, why).second) log::warn("skipping unreadable image (replaced in its batch): " + why);
        }
      }
      if (attempt > 20) throw Error("too many unreadable images in a row; last: " + why);
      sample = static_cast<int64_t>(index_below(mix_seed(static_cast<uint64_t>(sample), static_cast<uint64_t>(attempt)), static_cast<uint64_t>(n)));
    }
    b.samples.push_back(sample);
    // (u8 / 255 - 0.5) / 0.5, replicated to 3 channels (SPEC §4).
    auto img = torch::from_blob(g.pixels.data(), {s, s}, torch::kUInt8).to(torch::kFloat).div_(255.0).sub_(0.5).div_(0.5);
    b.images[k].copy_(img.unsqueeze(0).expand({3, s, s}));
    std::mt19937_64 rng(o_.random_captions ? mix_seed(mix_seed(o_.seed, static_cast<uint64_t>(epoch)), static_cast<uint64_t>(sample))
                                           : mix_seed(o_.seed, static_cast<uint64_t>(sample)));
    captions.push_back(text::sample_caption(data_.sentences[static_cast<size_t>(sample)], rng));
  }
  b.tokens = tokenize_(captions);
  return b;
}

bool BatchLoader::next(Batch& out) {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  if (next_take_ >= end_) return false;
  cv_.wait(lock, [&] { return !error_.empty() || ready_.count(next_take_) != 0; });
  if (!error_.empty()) throw Error("data loader: " + error_);
  out = std::move(ready_[next_take_]);
  ready_.erase(next_take_);
  ++next_take_;
  lock.unlock();
  cv_.notify_all();
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return true;
}

int64_t BatchLoader::bad_images() const {
  std::lock_guard<std::mutex> lock(bad_mu_);
  return static_cast<int64_t>(bad_.size());
}

}  // namespace afloc::train
