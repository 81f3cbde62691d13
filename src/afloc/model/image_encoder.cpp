#include "afloc/model/image_encoder.h"

namespace afloc::model {
namespace nn = torch::nn;
namespace F = torch::nn::functional;

ImageEncoderImpl::ImageEncoderImpl(const AflocConfig& c) : upsample_size(c.upsample_size) {
  model = register_module("model", ResNet(c.resnet));
  const int64_t d = c.embed_dim();
  global_embedder = register_module("global_embedder", nn::Linear(model->layer4_channels(), d));
  local_embedder = register_module(
      "local_embedder", nn::Conv2d(nn::Conv2dOptions(model->layer3_channels(), d, 1).bias(false)));
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
  if (upsample_size > 0) {
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
  e.deep = local_embedder(f.layer3);
  if (with_shallow) e.shallow = local2_embedder(f.layer2);
  if (nhwc) {
    // Callers index and reshape these maps; hand them back in the usual layout.
    e.deep = e.deep.contiguous();
    if (e.shallow.defined()) e.shallow = e.shallow.contiguous();
  }
  return e;
}

}  // namespace afloc::model
