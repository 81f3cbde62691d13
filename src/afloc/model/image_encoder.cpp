#include "afloc/model/image_encoder.h"

namespace afloc::model {
namespace nn = torch::nn;
namespace F = torch::nn::functional;

torch::Tensor resize_shifted(const torch::Tensor& images, int64_t size, double shift) {
  // Normalised align_corners coordinates of output pixel p + shift: independent of the input size.
  const torch::Tensor axis = (torch::arange(size, images.options()) + shift) * (2.0 / static_cast<double>(size - 1)) - 1.0;
  const std::vector<torch::Tensor> yx = torch::meshgrid({axis, axis}, "ij");
  const torch::Tensor grid = torch::stack({yx[1], yx[0]}, -1).unsqueeze(0).expand({images.size(0), size, size, 2});
  return F::grid_sample(images, grid,
                        F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kBorder).align_corners(true));
}

ImageEncoderImpl::ImageEncoderImpl(const AflocConfig& c) : upsample_size(c.upsample_size),
      deep_layer(c.deep_layer),
      cell_shift(c.align_cells ? (static_cast<double>(c.deep_stride()) - 1.0) / 2.0 : 0.0) {
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

ImageEmbeddings ImageEncoderImpl::forward(const torch::Tensor& images, bool with_shallow) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "images must be (B, 3, H, W), got ",
              images.sizes());
  torch::Tensor x = images;
  if (cell_shift > 0) {
    x = resize_shifted(x, upsample_size > 0 ? upsample_size : images.size(2), cell_shift);
  } else if (upsample_size > 0) {
    x = F::interpolate(x, F::InterpolateFuncOptions()
                              .size(std::vector<int64_t>{upsample_size, upsample_size})
                              .mode(torch::kBilinear)
                              .align_corners(true));
  }
  const bool nhwc = channels_last_ && !is_training();
  if (nhwc) x = x.contiguous(c10::MemoryFormat::ChannelsLast);
  const ResNetFeatures f = model(x);
  ImageEmbeddings e;
  e.global_feat = f.pooled;
  e.global = global_embedder(f.pooled);
  e.deep = local_embedder(deep_layer == 2 ? f.layer2 : f.layer3);
  if (with_shallow) e.shallow = local2_embedder(f.layer2);
  if (nhwc) {
    // Callers index and reshape these maps; hand them back in the usual layout.
    e.deep = e.deep.contiguous();
    if (e.shallow.defined()) e.shallow = e.shallow.contiguous();
  }
  return e;
}

}  // namespace afloc::model
