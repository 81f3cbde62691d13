#include "afloc/infer/localizer.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cctype>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "afloc/common/error.h"
#include "afloc/common/progress.h"
#include "afloc/common/strings.h"
#include "afloc/data/image_file.h"
#include "afloc/text/clean.h"

namespace fs = std::filesystem;

namespace afloc::infer {
namespace {

// Blue (-1) - white (0) - red (+1), as BGR, for heatmaps in [-1, 1].
cv::Vec3b diverging(float v) {
  const float t = std::clamp((v + 1.0f) / 2.0f, 0.0f, 1.0f);
  const auto mix = [](float a, float b, float u) { return static_cast<uint8_t>(std::lround(a + (b - a) * u)); };
  if (t < 0.5f) {
    const float u = t / 0.5f;  // blue (59, 76, 192) -> white
    return {mix(192, 245, u), mix(76, 245, u), mix(59, 245, u)};
  }
  const float u = (t - 0.5f) / 0.5f;  // white -> red (180, 4, 38)
  return {mix(245, 38, u), mix(245, 4, u), mix(245, 180, u)};
}

cv::Mat colour_heatmap(const torch::Tensor& heat) {
  const torch::Tensor h = heat.to(torch::kCPU, torch::kFloat).contiguous();
  const int rows = static_cast<int>(h.size(0)), cols = static_cast<int>(h.size(1));
  cv::Mat out(rows, cols, CV_8UC3, cv::Scalar(0, 0, 0));
  const float* p = h.data_ptr<float>();
  for (int y = 0; y < rows; ++y)
    for (int x = 0; x < cols; ++x) {
      const float v = p[y * cols + x];
      if (!std::isnan(v)) out.at<cv::Vec3b>(y, x) = diverging(v);
    }
  return out;
}

std::string shape_text(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

}  // namespace

Localizer::Localizer(model::AflocModel& net, LocalizeOptions options, PromptEncoder& prompts)
    : Localizer(std::vector<model::AflocModel>{net}, std::move(options), std::vector<PromptEncoder*>{&prompts}) {}

Localizer::Localizer(std::vector<model::AflocModel> nets, LocalizeOptions options, std::vector<PromptEncoder*> prompts)
    : nets_(std::move(nets)), o_(std::move(options)), prompts_(std::move(prompts)) {
  validate(o_.heatmap);
  if (nets_.empty()) throw Error("localize: no model");
  if (prompts_.size() != nets_.size()) throw Error("localize: one prompt encoder per model");
  if (o_.size < 16) throw Error("localize: size " + std::to_string(o_.size) + " is too small");
  if (o_.batch < 1) throw Error("localize: batch must be >= 1");
  check_reading_weights(o_.contrast, o_.centre);  // a negative weight is an error, never silently off
}

std::vector<std::vector<torch::Tensor>> mean_maps(std::vector<model::AflocModel>& nets, const std::vector<std::string>& films,
                                                  int64_t batch, const data::ImageReadOptions& read, bool progress) {
  if (films.empty()) throw Error("centred reading: no reference films");
  if (batch < 1) throw Error("centred reading: batch must be >= 1");
  torch::InferenceMode guard;
  std::vector<std::vector<torch::Tensor>> sums(nets.size());  // per model, per level
  ProgressBar bar("reference films", static_cast<int64_t>(films.size()), "img", progress);
  for (size_t start = 0; start < films.size(); start += static_cast<size_t>(batch)) {
    const size_t end = std::min(films.size(), start + static_cast<size_t>(batch));
    std::vector<data::Gray8> gray;
    for (size_t i = start; i < end; ++i) {
      try {
        gray.push_back(data::read_gray8(films[i], read));
      } catch (const std::exception& e) {
        throw Error("centred reading: reference film " + films[i] + ": " + e.what());
      }
    }
    for (size_t k = 0; k < nets.size(); ++k) {
      const auto levels = model::heatmap_maps(nets[k]->config(), image_embeddings(nets[k], gray));
      if (sums[k].empty())
        for (const auto& level : levels) sums[k].push_back(level.sum(0).to(torch::kDouble));
      else
        for (size_t j = 0; j < levels.size(); ++j) sums[k][j] += levels[j].sum(0).to(torch::kDouble);
    }
    bar.update(static_cast<int64_t>(end - start));
  }
  bar.finish();
  for (auto& model_sums : sums)
    for (auto& m : model_sums) m = (m / static_cast<double>(films.size())).to(torch::kFloat);
  return sums;
}

std::vector<torch::Tensor> mean_maps(model::AflocModel& net, const std::vector<std::string>& films, int64_t batch,
                                     const data::ImageReadOptions& read, bool progress) {
  std::vector<model::AflocModel> nets{net};
  return mean_maps(nets, films, batch, read, progress)[0];
}

void centre_maps(std::vector<torch::Tensor>& levels, const std::vector<torch::Tensor>& means, double weight) {
  check_reading_weight("centred reading", weight);
  if (levels.size() != means.size()) {
    throw Error("centred reading: the reference has " + std::to_string(means.size()) + " map level(s), the model reads " +
                std::to_string(levels.size()));
  }
  for (size_t j = 0; j < levels.size(); ++j) {
    if (levels[j].dim() != 4 || levels[j].sizes().slice(1) != means[j].sizes()) {
      throw Error("centred reading: reference map " + shape_text(means[j]) + " does not match the model's " +
                  shape_text(levels[j]) + " (level " + std::to_string(j) + ")");
    }
    levels[j] = levels[j] - weight * means[j].to(levels[j].device(), levels[j].scalar_type()).unsqueeze(0);
  }
}

void Localizer::set_centre(const std::vector<std::string>& films, const data::ImageReadOptions& read, bool progress) {
  if (o_.centre == 0) throw Error("localize: reference films given without a centre weight");
  centre_means_ = mean_maps(nets_, films, o_.batch, read, progress);
  centre_films_ = static_cast<int64_t>(films.size());
}

std::vector<Localization> Localizer::run(const std::vector<data::Gray8>& images, const std::vector<std::string>& names,
                                         const std::vector<std::string>& prompts, const ClassHead* presence) {
  TORCH_CHECK(nets_.size() == 1 || !presence, "an ensemble needs one presence head per model");
  return run(images, names, prompts, presence ? std::vector<ClassHead>{*presence} : std::vector<ClassHead>{});
}

std::vector<Localization> Localizer::run(const std::vector<data::Gray8>& images, const std::vector<std::string>& names,
                                         const std::vector<std::string>& prompts, const std::vector<ClassHead>& presence) {
  TORCH_CHECK(images.size() == names.size(), "one name per image");
  TORCH_CHECK(presence.empty() || presence.size() == nets_.size(), "one presence head per model");
  if (o_.centre > 0 && centre_means_.empty()) throw Error("localize: the centred reading needs reference films (set_centre)");
  for (const auto& head : presence)
    TORCH_CHECK(head.mode == ClassifyMode::kBinary && head.names.size() == prompts.size(),
                "presence head: binary, one class per prompt");
  const size_t n_models = nets_.size();
  std::vector<torch::Tensor> queries;  // per model (P, D)
  // The contrast reading's references are the prompts followed by the extra ones: one encoding
  // serves both, the prompts being its first rows.
  std::vector<std::string> references = prompts;
  if (o_.contrast > 0) references.insert(references.end(), o_.contrast_prompts.begin(), o_.contrast_prompts.end());
  for (size_t k = 0; k < n_models; ++k) {
    const torch::Tensor encoded = prompts_[k]->encode(references);
    const torch::Tensor q = encoded.slice(0, 0, static_cast<int64_t>(prompts.size()));
    queries.push_back(o_.contrast > 0 ? contrast_queries(q, encoded, o_.contrast) : q);
  }
  std::vector<std::string> cleaned;
  for (const auto& p : prompts) cleaned.push_back(text::clean_prompt(p));
  std::vector<Localization> out;
  for (size_t start = 0; start < images.size(); start += static_cast<size_t>(o_.batch)) {
    const size_t end = std::min(images.size(), start + static_cast<size_t>(o_.batch));
    torch::InferenceMode guard;
    // Per model: the maps of the batch (heatmap_levels), and the presence probabilities summed over the models.
    std::vector<std::vector<torch::Tensor>> levels;
    torch::Tensor prob;
    for (size_t k = 0; k < n_models; ++k) {
      const model::ImageEmbeddings emb = image_embeddings(nets_[k], images, start, end);
      levels.push_back(model::heatmap_maps(nets_[k]->config(), emb));
      if (o_.centre > 0) centre_maps(levels.back(), centre_means_.at(k), o_.centre);
      if (!presence.empty()) {
        const torch::Tensor p = class_probabilities(emb.global, presence[k]).cpu();
        prob = prob.defined() ? prob + p : p;
      }
    }
    if (prob.defined() && n_models > 1) prob = prob / static_cast<double>(n_models);
    for (size_t i = start; i < end; ++i) {
      const auto b = static_cast<int64_t>(i - start);
      // Each model's raw maps (each level's) for all prompts at once: (P, D) x (D, h, w) -> (P, h, w).
      std::vector<torch::Tensor> sims;
      for (size_t k = 0; k < n_models; ++k)
        for (const auto& level : levels[k]) sims.push_back(torch::einsum("dhw,pd->phw", {level[b], queries[k]}).cpu());
      for (size_t q = 0; q < prompts.size(); ++q) {
        Localization l;
        l.image = names[i];
        l.prompt = prompts[q];
        l.cleaned_prompt = cleaned[q];
        std::vector<torch::Tensor> maps;
        for (const auto& sim : sims) maps.push_back(sim[static_cast<int64_t>(q)]);
        l.heatmap = mean_heatmap(maps, o_.size, o_.heatmap);
        const torch::Tensor filled = torch::nan_to_num(l.heatmap, -std::numeric_limits<float>::infinity());
        const int64_t arg = torch::argmax(filled).item<int64_t>();
        l.peak_y = arg / o_.size;
        l.peak_x = arg % o_.size;
        l.peak = l.heatmap.flatten()[arg].item<double>();
        if (prob.defined()) {
          l.probability = prob[b][static_cast<int64_t>(q)].item<double>();
          l.present = l.probability > o_.present_threshold;
        }
        if (l.present || o_.all) l.regions = find_regions(l.heatmap, o_.thresholds, o_.min_region_pixels);
        out.push_back(std::move(l));
      }
    }
  }
  return out;
}

ClassPrompts presence_prompts(const std::string& prompt) {
  std::string finding = prompt;
  while (!finding.empty() && (finding.back() == '.' || finding.back() == ' ')) finding.pop_back();
  static const std::string kLead = "findings suggesting ";
  if (ascii_lower(finding).rfind(kLead, 0) == 0) finding = finding.substr(kLead.size());
  return {prompt, {prompt}, {"no " + finding + ". "}};
}

std::vector<Region> find_regions(const torch::Tensor& heatmap, const std::vector<double>& thresholds, int64_t min_pixels) {
  const torch::Tensor h = heatmap.to(torch::kCPU, torch::kFloat).contiguous();
  const int rows = static_cast<int>(h.size(0)), cols = static_cast<int>(h.size(1));
  const cv::Mat hm(rows, cols, CV_32F, const_cast<float*>(h.data_ptr<float>()));
  std::vector<Region> out;
  for (double t : thresholds) {
    cv::Mat mask = hm > static_cast<float>(t);  // NaN compares false
    cv::Mat labels, stats, centroids;
    const int n = cv::connectedComponentsWithStats(mask, labels, stats, centroids, 8, CV_32S);
    std::vector<Region> at;
    for (int k = 1; k < n; ++k) {
      Region r;
      r.threshold = t;
      r.x = stats.at<int>(k, cv::CC_STAT_LEFT);
      r.y = stats.at<int>(k, cv::CC_STAT_TOP);
      r.w = stats.at<int>(k, cv::CC_STAT_WIDTH);
      r.h = stats.at<int>(k, cv::CC_STAT_HEIGHT);
      r.pixels = stats.at<int>(k, cv::CC_STAT_AREA);
      if (r.pixels < min_pixels) continue;
      double sum = 0, mx = -1e30;
      for (int y = static_cast<int>(r.y); y < r.y + r.h; ++y)
        for (int x = static_cast<int>(r.x); x < r.x + r.w; ++x)
          if (labels.at<int>(y, x) == k) {
            const double v = hm.at<float>(y, x);
            sum += v;
            mx = std::max(mx, v);
          }
      r.score_mean = sum / static_cast<double>(r.pixels);
      r.score_max = mx;
      at.push_back(r);
    }
    std::sort(at.begin(), at.end(), [](const Region& a, const Region& b) { return a.pixels > b.pixels; });
    out.insert(out.end(), at.begin(), at.end());
  }
  return out;
}

void write_overlay(const std::string& path, const data::Gray8& image, const torch::Tensor& heatmap, const std::string& title,
                   const std::vector<std::array<int64_t, 4>>& boxes, const data::Gray8* outline) {
  const int rows = static_cast<int>(image.height), cols = static_cast<int>(image.width);
  TORCH_CHECK(heatmap.size(0) == rows && heatmap.size(1) == cols, "overlay: heatmap and image sizes differ");
  cv::Mat grey(rows, cols, CV_8UC1, const_cast<uint8_t*>(image.pixels.data()));
  cv::Mat colour;
  cv::cvtColor(grey, colour, cv::COLOR_GRAY2BGR);
  const cv::Mat heat = colour_heatmap(heatmap);
  // Opacity grows with |value|, so the film stays visible where the map is near 0 (white).
  const torch::Tensor h = heatmap.to(torch::kCPU, torch::kFloat).contiguous();
  const float* hp = h.data_ptr<float>();
  for (int y = 0; y < rows; ++y)
    for (int x = 0; x < cols; ++x) {
      const float v = hp[y * cols + x];
      if (std::isnan(v)) continue;
      const float a = 0.15f + 0.55f * std::min(1.0f, std::abs(v));
      cv::Vec3b& px = colour.at<cv::Vec3b>(y, x);
      const cv::Vec3b& hc = heat.at<cv::Vec3b>(y, x);
      for (int k = 0; k < 3; ++k) px[k] = static_cast<uint8_t>(std::lround(px[k] * (1 - a) + hc[k] * a));
    }
  if (outline) {
    TORCH_CHECK(outline->height == rows && outline->width == cols, "overlay: outline and image sizes differ");
    cv::Mat g = cv::Mat(rows, cols, CV_8UC1, const_cast<uint8_t*>(outline->pixels.data())) != 0;
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(g, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_NONE);
    cv::drawContours(colour, contours, -1, cv::Scalar(60, 220, 60), 1, cv::LINE_AA);
  }
  for (const auto& b : boxes) {
    cv::rectangle(colour, cv::Rect(static_cast<int>(b[0]), static_cast<int>(b[1]), static_cast<int>(b[2]), static_cast<int>(b[3])),
                  cv::Scalar(60, 220, 60), 1);
  }
  std::vector<std::string> lines;
  for (size_t a = 0, b; a <= title.size(); a = b + 1) {
    b = title.find('\n', a);
    if (b == std::string::npos) b = title.size();
    lines.push_back(title.substr(a, b - a));
  }
  cv::Mat canvas(rows + 4 + 14 * static_cast<int>(lines.size()), cols, CV_8UC3, cv::Scalar(20, 20, 20));
  colour.copyTo(canvas(cv::Rect(0, 0, cols, rows)));
  for (size_t k = 0; k < lines.size(); ++k)
    cv::putText(canvas, lines[k], cv::Point(3, rows + 13 + 14 * static_cast<int>(k)), cv::FONT_HERSHEY_SIMPLEX, 0.35,
                cv::Scalar(230, 230, 230), 1, cv::LINE_AA);
  data::write_image_file(path, canvas);
}

void write_heatmap_png(const std::string& path, const torch::Tensor& heatmap) { data::write_image_file(path, colour_heatmap(heatmap)); }

void write_mask_png(const std::string& path, const torch::Tensor& heatmap, double threshold) {
  const torch::Tensor m = (heatmap.to(torch::kCPU) > threshold).to(torch::kByte).mul(255).contiguous();
  data::write_image_file(path, cv::Mat(static_cast<int>(m.size(0)), static_cast<int>(m.size(1)), CV_8UC1, m.data_ptr<uint8_t>()).clone());
}

std::string slug(const std::string& text) {
  std::string out;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u)) out += static_cast<char>(std::tolower(u));
    else if (!out.empty() && out.back() != '_') out += '_';
  }
  while (!out.empty() && out.back() == '_') out.pop_back();
  if (out.size() > 60) out.resize(60);
  return out.empty() ? "prompt" : out;
}

}  // namespace afloc::infer
