#include "afloc/model/image_encoder.h"

namespace afloc::model {
namespace nn = torch::nn;
namespace F = torch::nn::functional;

torch::Tensor resize_shifted(const torch::Tensor& images, int64_t size, double shift) {
  return resize_shifted(images, size, shift, shift);
}

torch::Tensor resize_shifted(const torch::Tensor& images, int64_t size, double shift_y, double shift_x) {
  // Normalised align_corners coordinates of output pixel p + shift: independent of the input size.
  const auto axis = [&](double shift) {
    return (torch::arange(size, images.options()) + shift) * (2.0 / static_cast<double>(size - 1)) - 1.0;
  };
  const std::vector<torch::Tensor> yx = torch::meshgrid({axis(shift_y), axis(shift_x)}, "ij");
  const torch::Tensor grid = torch::stack({yx[1], yx[0]}, -1).unsqueeze(0).expand({images.size(0), size, size, 2});
  return F::grid_sample(images, grid,
                        F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kBorder).align_corners(true));
}

std::vector<torch::Tensor> heatmap_maps(const AflocConfig& c, const ImageEmbeddings& e) {
  std::vector<torch::Tensor> maps;
  if (c.heatmap_levels != "shallow") maps.push_back(e.deep);
  if (!c.reads_shallow()) return maps;
  TORCH_CHECK(e.shallow.defined(), "heatmap_levels ", c.heatmap_levels, ": the image embeddings hold no shallow map");
  const double shift = c.cell_shift();
  const double off = (shift > 0 ? shift - 3.5 : 0.0) / 8.0;  // shallow cells; 0.5 for a layer3 deep map
  TORCH_CHECK(off >= 0 && off < 1, "heatmap_levels: unexpected cell offset ", off);
  torch::Tensor s = e.shallow;
  if (off > 0) {
    // Cell i of the drawn map reads the network's map at i - off (linear, edge cell repeated).
    for (int64_t dim : {2, 3}) {
      const int64_t n = s.size(dim);
      const torch::Tensor prev = torch::cat({s.narrow(dim, 0, 1), s.narrow(dim, 0, n - 1)}, dim);
      s = s * (1.0 - off) + prev * off;
    }
  }
  maps.push_back(s);
  return maps;
}

ImageEncoderImpl::ImageEncoderImpl(const AflocConfig& c) : upsample_size(c.upsample_size),
      deep_layer(c.deep_layer),
      cell_shift(c.cell_shift()),
      dense_map(c.dense_map) {
  // The finer map's cell k sits at (k + 1/2) fine strides - 1/2 pixels when aligned: pass a's
  // cells are the network's cells i on the input translated by a half network stride.
  const double half = static_cast<double>(c.network_stride()) / 2.0;
  const double base = c.align_cells ? (half - 1.0) / 2.0 : 0.0;
  dense_shifts = {base, base + half};
  model = register_module("model", ResNet(c.resnet));
  const int64_t d = c.embed_dim();
  global_embedder = register_module("global_embedder", nn::Linear(model->layer4_channels(), d));
  local_embedder = register_module(
      "local_embedder", nn::Conv2d(nn::Conv2dOptions(deep_layer == 2 ? model->layer2_channels() : model->layer3_channels(), d, 1).bias(false)));
  local2_embedder = register_module(
      "local2_embedder", nn::Conv2d(nn::Conv2dOptions(model->layer2_channels(), d, 1).bias(false)));
}

void ImageEncoderImpl::optimize_for_inference() {
  eval();
  model->fuse(c10::MemoryFormat::ChannelsLast);
  torch::NoGradGuard ng;
  for (auto* conv : {&local_embedder, &local2_embedder})
    (*conv)->weight.set_data((*conv)->weight.contiguous(c10::MemoryFormat::ChannelsLast));
  channels_last_ = true;
}

torch::Tensor ImageEncoderImpl::network_input(const torch::Tensor& images, double shift_y, double shift_x) const {
  torch::Tensor x = images;
  if (shift_y != 0 || shift_x != 0) {
    x = resize_shifted(x, upsample_size > 0 ? upsample_size : images.size(2), shift_y, shift_x);
  } else if (upsample_size > 0) {
    x = F::interpolate(x, F::InterpolateFuncOptions()
                              .size(std::vector<int64_t>{upsample_size, upsample_size})
                              .mode(torch::kBilinear)
                              .align_corners(true));
  }
  if (channels_last_ && !is_training()) x = x.contiguous(c10::MemoryFormat::ChannelsLast);
  return x;
}

torch::Tensor ImageEncoderImpl::dense_deep(const torch::Tensor& images) {
  // passes[a][b]: translated by dense_shifts[a] down, dense_shifts[b] right; its cell (i, j)
  // becomes cell (2i + a, 2j + b) of the finer map.
  std::vector<torch::Tensor> rows;
  for (int a = 0; a < 2; ++a) {
    std::vector<torch::Tensor> cols;
    for (int b = 0; b < 2; ++b) {
      const ResNetFeatures f = model(network_input(images, dense_shifts[a], dense_shifts[b]));
      cols.push_back(local_embedder(deep_layer == 2 ? f.layer2 : f.layer3).contiguous());
    }
    rows.push_back(torch::stack(cols, -1));  // (B, D, h, w, 2)
  }
  const torch::Tensor s = torch::stack(rows, 3);  // (B, D, h, 2, w, 2)
  return s.reshape({s.size(0), s.size(1), 2 * s.size(2), 2 * s.size(4)});
}

ImageEmbeddings ImageEncoderImpl::forward(const torch::Tensor& images, bool with_shallow) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "images must be (B, 3, H, W), got ",
              images.sizes());
  const bool nhwc = channels_last_ && !is_training();
  const ResNetFeatures f = model(network_input(images, cell_shift, cell_shift));
  ImageEmbeddings e;
  e.global_feat = f.pooled;
  e.global = global_embedder(f.pooled);
  e.deep = dense_map ? dense_deep(images) : local_embedder(deep_layer == 2 ? f.layer2 : f.layer3);
  if (with_shallow) e.shallow = local2_embedder(f.layer2);
  if (nhwc) {
    // Callers index and reshape these maps; hand them back in the usual layout.
    e.deep = e.deep.contiguous();
    if (e.shallow.defined()) e.shallow = e.shallow.contiguous();
  }
  return e;
}

}  // namespace afloc::model
