#pragma once
/// torchvision-layout ResNet-18/34/50 without the classifier. Submodules carry torchvision's
/// attribute names (conv1, bn1, layer1.0.conv1, layer1.0.downsample.0, ...) so state-dict keys map
/// one to one to torchvision checkpoints.
#include <torch/torch.h>

#include "afloc/model/config.h"

namespace afloc::model {

/// A convolution with its batch norm folded in (inference only): conv(x, w * s) + (beta - mean * s),
/// s = gamma / sqrt(var + eps).
struct FusedConv {
  torch::Tensor weight, bias;
  int64_t stride = 1, padding = 0, dilation = 1;
  /// Folds `bn` (eval statistics) into `conv` (no bias); weights in `format`.
  static FusedConv fold(const torch::nn::Conv2d& conv, const torch::nn::BatchNorm2d& bn, c10::MemoryFormat format);
  torch::Tensor operator()(const torch::Tensor& x) const;
};

/// Bottleneck (ResNet-50; torchvision v1.5: stride on conv2) or BasicBlock (ResNet-18/34).
class ResBlockImpl : public torch::nn::Module {
 public:
  ResBlockImpl(bool bottleneck, int64_t in_ch, int64_t planes, int64_t stride, int64_t dilation = 1);
  /// x: (B, in_ch, H, W) -> (B, planes * expansion, H/stride, W/stride)
  torch::Tensor forward(const torch::Tensor& x);
  static int64_t expansion(bool bottleneck) { return bottleneck ? 4 : 1; }
  /// Folds every batch norm into its convolution for inference; the folded path runs while the
  /// module is in eval mode. Redo after the weights change; unfuse() drops it.
  void fuse(c10::MemoryFormat format);
  void unfuse() { fused_.clear(); }

 private:
  std::vector<FusedConv> fused_;  // conv1..3 (or 1..2), then downsample when present
  bool bottleneck_;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(ResBlock);

/// Stage outputs of the ResNet trunk.
struct ResNetFeatures {
  torch::Tensor layer2;  ///< (B, 2*w*e, H/8,  W/8)
  torch::Tensor layer3;  ///< (B, 4*w*e, H/16, W/16); H/8 with dilate_layer3
  torch::Tensor layer4;  ///< (B, 8*w*e, H/32, W/32)
  torch::Tensor pooled;  ///< (B, 8*w*e): adaptive average pool of layer4
};

class ResNetImpl : public torch::nn::Module {
 public:
  explicit ResNetImpl(const ResNetConfig& config);
  /// x: (B, 3, H, W) -> stage features.
  ResNetFeatures forward(const torch::Tensor& x);
  int64_t layer2_channels() const { return layer2_channels_; }
  int64_t layer3_channels() const { return layer3_channels_; }
  int64_t layer4_channels() const { return layer4_channels_; }
  /// See ResBlockImpl::fuse.
  void fuse(c10::MemoryFormat format);
  void unfuse();

 private:
  std::vector<FusedConv> stem_;
  torch::nn::Sequential make_layer(int64_t planes, int64_t blocks, int64_t stride, bool dilate);
  bool bottleneck_;
  int64_t in_ch_;
  int64_t dilation_ = 1;
  int64_t layer2_channels_ = 0, layer3_channels_ = 0, layer4_channels_ = 0;
  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
};
TORCH_MODULE(ResNet);

}  // namespace afloc::model
