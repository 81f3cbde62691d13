#include "afloc/model/resnet.h"

#include "afloc/common/error.h"

namespace afloc::model {
namespace nn = torch::nn;

namespace {

nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad, int64_t dilation = 1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).dilation(dilation).bias(false));
}

}  // namespace

FusedConv FusedConv::fold(const nn::Conv2d& conv, const nn::BatchNorm2d& bn, c10::MemoryFormat format) {
  torch::NoGradGuard ng;
  const auto& o = bn->options;
  const torch::Tensor scale = bn->weight / torch::sqrt(bn->running_var + o.eps());
  FusedConv f;
  f.weight = (conv->weight * scale.view({-1, 1, 1, 1})).contiguous(format);
  f.bias = bn->bias - bn->running_mean * scale;
  f.stride = conv->options.stride()->at(0);
  f.dilation = conv->options.dilation()->at(0);
  // torchvision's convolutions are all 'same'-padded: dilation * (k - 1) / 2 (the padding option
  // is a variant whose accessor differs between LibTorch 1.x and 2.x).
  f.padding = f.dilation * (conv->options.kernel_size()->at(0) - 1) / 2;
  return f;
}

torch::Tensor FusedConv::operator()(const torch::Tensor& x) const {
  return torch::conv2d(x, weight, bias, stride, padding, dilation);
}

void ResBlockImpl::fuse(c10::MemoryFormat format) {
  fused_ = {FusedConv::fold(conv1, bn1, format), FusedConv::fold(conv2, bn2, format)};
  if (bottleneck_) fused_.push_back(FusedConv::fold(conv3, bn3, format));
  if (downsample) {
    fused_.push_back(FusedConv::fold(nn::Conv2d(std::dynamic_pointer_cast<nn::Conv2dImpl>(downsample->ptr(0))),
                                     nn::BatchNorm2d(std::dynamic_pointer_cast<nn::BatchNorm2dImpl>(downsample->ptr(1))), format));
  }
}

ResBlockImpl::ResBlockImpl(bool bottleneck, int64_t in_ch, int64_t planes, int64_t stride, int64_t dilation)
    : bottleneck_(bottleneck) {
  const int64_t out_ch = planes * expansion(bottleneck);
  if (bottleneck) {
    conv1 = register_module("conv1", conv(in_ch, planes, 1, 1, 0));
    bn1 = register_module("bn1", nn::BatchNorm2d(planes));
    conv2 = register_module("conv2", conv(planes, planes, 3, stride, dilation, dilation));
    bn2 = register_module("bn2", nn::BatchNorm2d(planes));
    conv3 = register_module("conv3", conv(planes, out_ch, 1, 1, 0));
    bn3 = register_module("bn3", nn::BatchNorm2d(out_ch));
  } else {
    // torchvision's BasicBlock refuses dilation; here both 3x3 convolutions take it.
    conv1 = register_module("conv1", conv(in_ch, planes, 3, stride, dilation, dilation));
    bn1 = register_module("bn1", nn::BatchNorm2d(planes));
    conv2 = register_module("conv2", conv(planes, planes, 3, 1, dilation, dilation));
    bn2 = register_module("bn2", nn::BatchNorm2d(planes));
  }
  if (stride != 1 || in_ch != out_ch) {
    downsample = register_module(
        "downsample", nn::Sequential(conv(in_ch, out_ch, 1, stride, 0), nn::BatchNorm2d(out_ch)));
  }
}

torch::Tensor ResBlockImpl::forward(const torch::Tensor& x) {
  if (!fused_.empty() && !is_training()) {
    const size_t n = bottleneck_ ? 3 : 2;
    torch::Tensor out = fused_[0](x).relu_();
    if (bottleneck_) out = fused_[1](out).relu_();
    out = fused_[n - 1](out);
    out += fused_.size() > n ? fused_[n](x) : x;
    return out.relu_();
  }
  // In-place ReLU and residual add, as torchvision's blocks: fewer 4-D temporaries (each up to
  // B x 256 x 75 x 75 floats at 299 px), which is most of the forward's memory traffic.
  torch::Tensor out = bn1(conv1(x)).relu_();
  if (bottleneck_) {
    out = bn2(conv2(out)).relu_();
    out = bn3(conv3(out));
  } else {
    out = bn2(conv2(out));
  }
  out += downsample ? downsample->forward(x) : x;
  return out.relu_();
}

ResNetImpl::ResNetImpl(const ResNetConfig& config) : bottleneck_(config.depth == 50) {
  std::vector<int64_t> blocks;
  switch (config.depth) {
    case 10: blocks = {1, 1, 1, 1}; break;  // ResNet-10: smaller receptive fields, for small data
    case 18: blocks = {2, 2, 2, 2}; break;
    case 34: blocks = {3, 4, 6, 3}; break;
    case 50: blocks = {3, 4, 6, 3}; break;
    default:
      throw Error("resnet.depth = " + std::to_string(config.depth) + ": expected 10, 18, 34 or 50");
  }
  const int64_t w = config.width;
  in_ch_ = w;
  conv1 = register_module("conv1", conv(3, w, 7, 2, 3));
  bn1 = register_module("bn1", nn::BatchNorm2d(w));
  layer1 = register_module("layer1", make_layer(w, blocks[0], 1, false));
  layer2 = register_module("layer2", make_layer(w * 2, blocks[1], 2, false));
  layer2_channels_ = in_ch_;
  layer3 = register_module("layer3", make_layer(w * 4, blocks[2], 2, config.dilate_layer3));
  layer3_channels_ = in_ch_;
  layer4 = register_module("layer4", make_layer(w * 8, blocks[3], 2, false));
  layer4_channels_ = in_ch_;
  // torchvision's init: kaiming-normal (fan_out, relu) convolutions, BN weight 1 / bias 0.
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* c = m->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
    }
  }
}

nn::Sequential ResNetImpl::make_layer(int64_t planes, int64_t n, int64_t stride, bool dilate) {
  // torchvision's _make_layer: a dilated layer trades its stride for dilation; its first block
  // keeps the previous dilation, and later layers inherit the grown one.
  const int64_t previous = dilation_;
  if (dilate) {
    dilation_ *= stride;
    stride = 1;
  }
  nn::Sequential seq;
  for (int64_t i = 0; i < n; ++i) {
    seq->push_back(ResBlock(bottleneck_, in_ch_, planes, i == 0 ? stride : 1, i == 0 ? previous : dilation_));
    in_ch_ = planes * ResBlockImpl::expansion(bottleneck_);
  }
  return seq;
}

void ResNetImpl::fuse(c10::MemoryFormat format) {
  stem_ = {FusedConv::fold(conv1, bn1, format)};
  for (const auto& layer : {layer1, layer2, layer3, layer4})
    for (size_t i = 0; i < layer->size(); ++i) layer->ptr(i)->as<ResBlockImpl>()->fuse(format);
}

void ResNetImpl::unfuse() {
  stem_.clear();
  for (const auto& layer : {layer1, layer2, layer3, layer4})
    for (size_t i = 0; i < layer->size(); ++i) layer->ptr(i)->as<ResBlockImpl>()->unfuse();
}

ResNetFeatures ResNetImpl::forward(const torch::Tensor& x) {
  // x: (B, 3, H, W)
  torch::Tensor h = (!stem_.empty() && !is_training() ? stem_[0](x) : bn1(conv1(x))).relu_();
  h = torch::max_pool2d(h, /*kernel_size=*/3, /*stride=*/2, /*padding=*/1);
  h = layer1->forward(h);
  ResNetFeatures f;
  f.layer2 = layer2->forward(h);
  f.layer3 = layer3->forward(f.layer2);
  f.layer4 = layer4->forward(f.layer3);
  f.pooled = torch::adaptive_avg_pool2d(f.layer4, {1, 1}).flatten(1);
  return f;
}

}  // namespace afloc::model
