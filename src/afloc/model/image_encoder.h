#pragma once
/// AFLoc image encoder (SPEC §1): ResNet trunk on the input bilinearly upsampled (align_corners) to
/// upsample_size, layer2 -> 1x1 conv (no bias) = shallow local features, layer3 -> 1x1 conv (no bias)
/// = deep local features, pooled layer4 -> Linear (bias) = global feature. No L2 normalisation.
/// Module names as in the authors' checkpoints: model.*, global_embedder, local_embedder,
/// local2_embedder.
#include <torch/torch.h>

#include <array>
#include <vector>

#include "afloc/model/config.h"
#include "afloc/model/resnet.h"

namespace afloc::model {

/// paper config at 224 input: shallow (B,768,38,38), deep (B,768,19,19), global (B,768).
struct ImageEmbeddings {
  torch::Tensor shallow;      ///< v_s (B, D, hs, ws): layer2 projection, aligned with words
  torch::Tensor deep;         ///< v_d (B, D, hd, wd): layer3 projection, sentences and heatmaps
  torch::Tensor global;       ///< v_g (B, D)
  torch::Tensor global_feat;  ///< pooled layer4 before the projection (B, C4)
};

/// Bilinear (align_corners) resize of (B, C, H, W) images to (size, size) that also translates:
/// output pixel p reads where the plain resize reads p + shift (edge pixels replicated beyond
/// the border). shift 0 is F::interpolate(bilinear, align_corners=True).
torch::Tensor resize_shifted(const torch::Tensor& images, int64_t size, double shift);
/// The same with separate vertical and horizontal shifts.
torch::Tensor resize_shifted(const torch::Tensor& images, int64_t size, double shift_y, double shift_x);

/// The maps a heatmap reads (config.heatmap_levels), each (B, D, h, w): v_d and/or the shallow map
/// v_s (which `e` must then hold), v_s resampled where its cells look: with align_cells the input is
/// shifted for the deep stride, so a layer2 cell sits (cell shift - 3.5) / 8 of a cell before
/// where SPEC §4's upsampling draws it (half a cell for a layer3 deep map). Heatmaps average them.
std::vector<torch::Tensor> heatmap_maps(const AflocConfig& config, const ImageEmbeddings& e);

class ImageEncoderImpl : public torch::nn::Module {
 public:
  explicit ImageEncoderImpl(const AflocConfig& config);
  /// images: (B, 3, S, S) in [-1, 1]. with_shallow = false leaves `shallow` undefined (inference
  /// needs only deep and global: saves the layer2 projection).
  ImageEmbeddings forward(const torch::Tensor& images, bool with_shallow = true);
  /// Inference: batch norms folded into the convolutions and channels-last (NHWC) activations,
  /// the layout oneDNN convolves without reordering. Eval mode only; redo after weights change.
  void optimize_for_inference();

  ResNet model{nullptr};
  torch::nn::Linear global_embedder{nullptr};
  torch::nn::Conv2d local_embedder{nullptr};   ///< layer3 (or layer2, deep_layer 2) -> D
  torch::nn::Conv2d local2_embedder{nullptr};  ///< layer2 -> D
  int64_t upsample_size;
  int64_t deep_layer;  ///< 3: v_d from layer3 (SPEC); 2: from layer2
  /// Input shift of AflocConfig::align_cells: (network stride - 1) / 2 pixels, 0 without it.
  double cell_shift;
  /// AflocConfig::dense_map: v_d stitched from four passes on inputs translated by
  /// dense_shifts (y, x) in {0, 1}^2 (pixels; half a network stride apart, plus the half-cell
  /// alignment of the finer map when align_cells is on).
  bool dense_map;
  std::array<double, 2> dense_shifts{};

 private:
  torch::Tensor network_input(const torch::Tensor& images, double shift_y, double shift_x) const;
  torch::Tensor dense_deep(const torch::Tensor& images);
  bool channels_last_ = false;
};
TORCH_MODULE(ImageEncoder);

}  // namespace afloc::model
