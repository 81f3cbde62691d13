#include "afloc/loss/alignment.h"

#include <cmath>
#include <limits>
#include <tuple>
#include <utility>

#include "afloc/model/image_encoder.h"
#include "afloc/model/text_encoder.h"

namespace afloc::loss {
namespace F = torch::nn::functional;

namespace {

constexpr double kCosEps = 1e-8;  // the authors' cosine_similarity clamps |x||y| at 1e-8

torch::Tensor labels_for(int64_t n, const torch::Device& device) {
  return torch::arange(n, torch::TensorOptions().dtype(torch::kLong).device(device));
}

// Cross-entropy of a square score matrix both ways (image -> captions, caption -> images), the
// matched pair on the diagonal. drop (optional, (B, B) bool, false on the diagonal): pairs left out
// of the softmax, neither positive nor negative.
std::pair<torch::Tensor, torch::Tensor> contrast(const torch::Tensor& scores, const torch::Tensor& drop) {
  const int64_t n = scores.size(0);
  torch::Tensor s = scores;
  if (drop.defined()) {
    TORCH_CHECK(drop.dim() == 2 && drop.size(0) == n && drop.size(1) == scores.size(1),
                "the dropped-pairs mask must be (", n, ", ", scores.size(1), "), got ", drop.sizes());
    TORCH_CHECK(!drop.diagonal().any().item<bool>(), "the dropped-pairs mask drops a matched pair (its diagonal)");
    s = s.masked_fill(drop.to(s.device(), torch::kBool), -std::numeric_limits<double>::infinity());
  }
  const torch::Tensor labels = labels_for(n, scores.device());
  return {F::cross_entropy(s, labels), F::cross_entropy(s.t(), labels)};
}

}  // namespace

LocalLossResult local_loss(const torch::Tensor& regions, const torch::Tensor& units,
                           const torch::Tensor& lens_in, const LocalLossOptions& opt, const torch::Tensor& skip,
                           const torch::Tensor& drop) {
  TORCH_CHECK(regions.dim() == 4, "regions must be (B, D, h, w), got ", regions.sizes());
  TORCH_CHECK(units.dim() == 3, "units must be (B, D, T), got ", units.sizes());
  TORCH_CHECK(regions.size(0) == units.size(0), "image batch ", regions.size(0),
              " != caption batch ", units.size(0));
  TORCH_CHECK(regions.size(1) == units.size(1), "region dim ", regions.size(1), " != unit dim ",
              units.size(1));
  const int64_t b = regions.size(0), d = regions.size(1), h = regions.size(2), w = regions.size(3);
  const int64_t r = h * w;
  const torch::Tensor lens = lens_in.to(torch::kCPU, torch::kLong);
  TORCH_CHECK(lens.numel() == b, "lens must have ", b, " entries, got ", lens.numel());
  const int64_t t = lens.max().item<int64_t>();
  TORCH_CHECK(lens.min().item<int64_t>() >= 1, "every caption needs at least one unit");
  TORCH_CHECK(t <= units.size(2), "lens up to ", t, " but only ", units.size(2), " units");
  const auto device = regions.device();

  // valid[k, i]: unit i belongs to caption k. Unused units are zeroed so that whatever they hold
  // (pads, NaN) never reaches the result or its gradient, as the authors' slicing guarantees.
  torch::Tensor valid = torch::arange(t).unsqueeze(0) < lens.unsqueeze(1);  // (B, T)
  if (skip.defined()) {
    TORCH_CHECK(skip.dim() == 2 && skip.size(0) == b && skip.size(1) >= t, "skip must be (", b, ", >= ", t,
                "), got ", skip.sizes());
    valid = valid & skip.narrow(1, 0, t).to(torch::kCPU, torch::kBool).logical_not();
  }
  valid = valid.to(device);
  // Contiguous (B, D, T): the text encoder's units are a transposed view of (B, T, D), and with that
  // layout the gradients reaching the bmm below get strides that drop it off the BLAS path (10x).
  const torch::Tensor q = torch::where(valid.unsqueeze(1), units.narrow(2, 0, t),
                                       torch::zeros({}, units.options()))
                              .contiguous();  // (B, D, T)
  const torch::Tensor ctx = regions.reshape({b, d, r});                        // (B, D, R)
  const torch::Tensor ctx_rows = ctx.transpose(1, 2).reshape({b * r, d});      // (B*R, D)

  const int64_t per_caption = b * std::max(r, d) * t;
  int64_t chunk = b;
  if (opt.max_block_elements > 0) {
    chunk = std::max<int64_t>(1, std::min<int64_t>(b, opt.max_block_elements / std::max<int64_t>(per_caption, 1)));
  }

  std::vector<torch::Tensor> sims;
  LocalLossResult res;
  for (int64_t k0 = 0; k0 < b; k0 += chunk) {
    const int64_t c = std::min(chunk, b - k0);
    const torch::Tensor qd = q.narrow(0, k0, c).permute({1, 0, 2});  // (D, C, T)
    const torch::Tensor vc = valid.narrow(0, k0, c);         // (C, T)
    // Layout (B, R, C, T) throughout, so both contractions are one large matmul per image:
    // scores[b, r, c, i] = <region r of image b, unit i of caption c>.
    // One (B*R, D) x (D, C*T) gemm. (matmul on the transposed 3-D view would not fold it into one
    // gemm when it needs a gradient; it would run a bmm against a stride-0 expanded operand, whose
    // backward is ~10x slower.)
    torch::Tensor attn = torch::mm(ctx_rows, qd.reshape({d, c * t})).view({b, r, c, t});
    attn = attn.masked_fill(vc.logical_not().view({1, 1, c, t}), -std::numeric_limits<float>::infinity());
    attn = torch::softmax(attn, -1) * opt.temp1;  // over units
    attn = torch::softmax(attn, 1);               // over regions
    const torch::Tensor wctx = torch::bmm(ctx, attn.view({b, r, c * t})).view({b, d, c, t});
    const torch::Tensor qb = qd.unsqueeze(0);                     // (1, D, C, T)
    const torch::Tensor dot = (qb * wctx).sum(1);                 // (B, C, T)
    const torch::Tensor norms = (qb.norm(2, 1) * wctx.norm(2, 1)).clamp_min(kCosEps);
    const torch::Tensor cosine = dot / norms;
    torch::Tensor e = torch::exp(cosine * opt.temp2);
    e = torch::where(vc.unsqueeze(0), e, torch::zeros({}, e.options()));
    sims.push_back(torch::log(e.sum(-1)));  // (B, C)
    if (opt.return_attention) {
      for (int64_t j = 0; j < c; ++j) {
        const int64_t k = k0 + j;
        const int64_t len = lens[k].item<int64_t>();
        // attention of caption k over its own image: (R, T) -> (1, len, h, w)
        res.attention.push_back(
            attn.select(0, k).select(1, j).narrow(1, 0, len).transpose(0, 1).reshape({1, len, h, w}));
      }
    }
  }
  res.similarities = torch::cat(sims, 1) * opt.temp3;  // (B_img, B_cap)
  std::tie(res.loss0, res.loss1) = contrast(res.similarities, drop);
  return res;
}

torch::Tensor same_key_pairs(const torch::Tensor& keys) {
  TORCH_CHECK(keys.dim() == 1, "keys must be (B), got ", keys.sizes());
  const torch::Tensor k = keys.to(torch::kCPU, torch::kLong);
  return (k.unsqueeze(0) == k.unsqueeze(1)) & torch::eye(k.size(0), torch::kBool).logical_not();
}

std::pair<torch::Tensor, torch::Tensor> local_loss_reference(const torch::Tensor& regions,
                                                             const torch::Tensor& units,
                                                             const std::vector<int64_t>& lens,
                                                             const LocalLossOptions& opt) {
  const int64_t b = regions.size(0), d = regions.size(1);
  const torch::Tensor ctx = regions.reshape({b, d, -1});
  std::vector<torch::Tensor> cols;
  for (int64_t i = 0; i < b; ++i) {
    const torch::Tensor word =
        units[i].narrow(1, 0, lens[static_cast<size_t>(i)]).unsqueeze(0).repeat({b, 1, 1});  // (B, D, T)
    torch::Tensor attn = torch::bmm(ctx.transpose(1, 2), word);                             // (B, R, T)
    attn = torch::softmax(attn, -1) * opt.temp1;
    attn = torch::softmax(attn, -2);
    const torch::Tensor wc = torch::bmm(ctx, attn);  // (B, D, T)
    const torch::Tensor cos = (word * wc).sum(1) / (word.norm(2, 1) * wc.norm(2, 1)).clamp_min(kCosEps);
    cols.push_back(torch::log(torch::exp(cos * opt.temp2).sum(1, true)));
  }
  const torch::Tensor sim = torch::cat(cols, 1) * opt.temp3;
  const torch::Tensor labels = labels_for(b, regions.device());
  return {F::cross_entropy(sim, labels), F::cross_entropy(sim.t(), labels)};
}

GlobalLossResult global_loss(const torch::Tensor& image, const torch::Tensor& report, double temp3,
                             const torch::Tensor& drop) {
  TORCH_CHECK(image.dim() == 2 && report.dim() == 2 && image.sizes() == report.sizes(),
              "global loss needs (B, D) image and report vectors, got ", image.sizes(), " and ",
              report.sizes());
  GlobalLossResult res;
  const torch::Tensor norms = torch::outer(image.norm(2, 1), report.norm(2, 1)).clamp_min(kCosEps);
  res.scores = torch::matmul(image, report.t()) / norms * temp3;
  std::tie(res.loss0, res.loss1) = contrast(res.scores, drop);
  return res;
}

GlobalLossResult region_report_loss(const torch::Tensor& deep, const torch::Tensor& report, double gamma,
                                    double temp3, const torch::Tensor& drop) {
  TORCH_CHECK(deep.dim() == 4 && report.dim() == 2 && deep.size(0) == report.size(0) && deep.size(1) == report.size(1),
              "region-report loss needs (B, D, h, w) regions and (B, D) report vectors, got ", deep.sizes(), " and ",
              report.sizes());
  TORCH_CHECK(gamma > 0, "loss.region_report_gamma must be > 0, got ", gamma);
  const torch::Tensor regions = deep.flatten(2);  // (B, D, N)
  const int64_t n = regions.size(2);
  const torch::Tensor rn = regions / regions.norm(2, 1, true).clamp_min(kCosEps);
  const torch::Tensor tn = report / report.norm(2, 1, true).clamp_min(kCosEps);
  const torch::Tensor cos = torch::einsum("bdn,kd->bkn", {rn, tn});  // (B images, B captions, N)
  GlobalLossResult res;
  res.scores = (torch::logsumexp(cos * gamma, 2) - std::log(static_cast<double>(n))) / gamma * temp3;
  std::tie(res.loss0, res.loss1) = contrast(res.scores, drop);
  return res;
}

AlignmentLoss alignment_loss(const torch::Tensor& shallow, const torch::Tensor& deep,
                             const torch::Tensor& global, const torch::Tensor& words,
                             const torch::Tensor& word_lens, const torch::Tensor& sentences,
                             const torch::Tensor& sent_lens, const torch::Tensor& report,
                             const model::LossConfig& c, int64_t max_block_elements,
                             const torch::Tensor& sent_negated, const torch::Tensor& drop) {
  LocalLossOptions lo;
  lo.temp1 = c.temp1;
  lo.temp2 = c.temp2;
  lo.temp3 = c.temp3;
  lo.max_block_elements = max_block_elements;
  AlignmentLoss out;
  std::vector<torch::Tensor> terms;
  if (c.use_report) {
    const auto g = global_loss(global, report, c.temp3, drop);
    out.report = (g.loss0 + g.loss1) * c.report_weight;
    terms.push_back(out.report);
  }
  // The sentence–region loss of a map: the deep map's term, and the shallow map's when on.
  const auto sentence_loss = [&](const torch::Tensor& regions) {
    const auto l = local_loss(regions, sentences, sent_lens, lo, c.skip_negated ? sent_negated : torch::Tensor(), drop);
    return l.loss0 + l.loss1;
  };
  if (c.use_sentence) {
    out.sentence = sentence_loss(deep) * c.sentence_weight;
    terms.push_back(out.sentence);
  }
  if (c.shallow_sentence_weight > 0) {
    TORCH_CHECK(shallow.defined(), "loss.shallow_sentence_weight needs the shallow map v_s");
    out.shallow_sentence = sentence_loss(shallow) * c.shallow_sentence_weight;
    terms.push_back(out.shallow_sentence);
  }
  if (c.region_report_weight > 0) {
    const auto g = region_report_loss(deep, report, c.region_report_gamma, c.temp3, drop);
    out.region = (g.loss0 + g.loss1) * c.region_report_weight;
    terms.push_back(out.region);
  }
  if (c.use_word) {
    const auto l = local_loss(shallow, words, word_lens, lo, {}, drop);
    out.word = (l.loss0 + l.loss1) * c.word_weight;
    terms.push_back(out.word);
  }
  TORCH_CHECK(!terms.empty(), "alignment loss: every term is switched off");
  out.total = terms[0];
  for (size_t i = 1; i < terms.size(); ++i) out.total = out.total + terms[i];
  return out;
}

AlignmentLoss alignment_loss(const model::ImageEmbeddings& image, const model::TextEmbeddings& text,
                             const model::LossConfig& c, int64_t max_block_elements, const torch::Tensor& drop) {
  TORCH_CHECK(!c.skip_negated || text.sent_negated.defined(),
              "loss.skip_negated needs the text encoder's negation flags");
  return alignment_loss(image.shallow, image.deep, image.global, text.words, text.word_lens,
                        text.sentences, text.sent_lens, text.report, c, max_block_elements, text.sent_negated, drop);
}

}  // namespace afloc::loss
