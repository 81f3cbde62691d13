// Parity with references computed on this machine by scripts/gen_reference.py (Debian's
// python3-torch / torchvision): ResNet-18/50 vs torchvision, BERT vs an independent torch.nn
// implementation built on nn.MultiheadAttention with Hugging Face parameter names; AUROC and
// balanced accuracy vs sklearn.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "afloc/common/error.h"
#include "afloc/eval/metrics.h"
#include "afloc/io/state_dict.h"
#include "afloc/io/tensor_file.h"
#include "afloc/model/bert.h"
#include "afloc/model/resnet.h"
#include "golden.h"
#include "tensor_compare.h"

namespace afloc::test {
namespace {

// The files gen_reference.py writes for a kind; a missing one is a failure, not a skip.
std::vector<std::string> reference_files(const std::string& prefix, std::initializer_list<const char*> suffixes) {
  std::vector<std::string> out;
  for (const char* suffix : suffixes) {
    const std::string p = reference_dir() + "/" + prefix + suffix + ".pt";
    if (std::ifstream(p).good()) {
      out.push_back(p);
    } else {
      ADD_FAILURE() << "missing " << p << " (run: /usr/bin/python3 scripts/gen_reference.py --out "
                    << reference_dir() << ")";
    }
  }
  return out;
}

TEST(Reference, ResNetMatchesTorchvision) {
  const auto files = reference_files("resnet", {"18", "34", "50", "50_dilated"});
  torch::NoGradGuard g;
  for (const auto& f : files) {
    SCOPED_TRACE(f);
    const io::TensorMap m = io::load_tensor_file(f);
    model::ResNetConfig cfg;
    cfg.depth = static_cast<int>(io::require(m, "meta.depth", f).item<int64_t>());
    if (m.count("meta.dilate_layer3")) cfg.dilate_layer3 = m.at("meta.dilate_layer3").item<int64_t>() != 0;
    model::ResNet net(cfg);
    const io::LoadReport rep = io::load_state_dict(*net, io::select_prefix(m, "state_dict."), f);
    EXPECT_TRUE(rep.complete()) << rep.summary();
    net->eval();
    const model::ResNetFeatures out = net(io::require(m, "input", f));
    const std::string tag = "resnet" + std::to_string(cfg.depth) + (cfg.dilate_layer3 ? " dilated " : " ");
    expect_close(tag + "layer2", out.layer2, io::require(m, "out.layer2", f), 1e-4);
    expect_close(tag + "layer3", out.layer3, io::require(m, "out.layer3", f), 1e-4);
    expect_close(tag + "layer4", out.layer4, io::require(m, "out.layer4", f), 1e-4);
    expect_close(tag + "pooled", out.pooled, io::require(m, "out.pooled", f), 1e-4);
  }
}

TEST(Reference, BertMatchesTorchNnReference) {
  const auto files = reference_files("bert", {"_base2", "_small"});
  torch::NoGradGuard g;
  for (const auto& f : files) {
    SCOPED_TRACE(f);
    const io::TensorMap m = io::load_tensor_file(f);
    model::BertConfig cfg;
    cfg.vocab_size = io::require(m, "meta.vocab_size", f).item<int64_t>();
    cfg.hidden_size = io::require(m, "meta.hidden_size", f).item<int64_t>();
    cfg.num_layers = io::require(m, "meta.num_layers", f).item<int64_t>();
    cfg.num_heads = io::require(m, "meta.num_heads", f).item<int64_t>();
    cfg.intermediate_size = io::require(m, "meta.intermediate_size", f).item<int64_t>();
    cfg.max_position_embeddings = io::require(m, "meta.max_position_embeddings", f).item<int64_t>();
    model::BertModel net(cfg);
    const io::LoadReport rep = io::load_state_dict(*net, io::select_prefix(m, "state_dict."), f);
    EXPECT_TRUE(rep.complete()) << rep.summary();
    net->eval();
    const auto states = net(io::require(m, "input_ids", f), io::require(m, "attention_mask", f),
                            io::require(m, "token_type_ids", f));
    ASSERT_EQ(static_cast<int64_t>(states.size()), cfg.num_layers + 1);
    const torch::Tensor mask = io::require(m, "attention_mask", f).to(torch::kBool).unsqueeze(-1);
    for (size_t i = 0; i < states.size(); ++i) {
      const std::string key = "hidden." + std::to_string(i);
      // Padded positions are compared too: both sides compute them the same way.
      expect_close("bert L" + std::to_string(cfg.num_layers) + "/H" + std::to_string(cfg.hidden_size) + " " + key,
                   states[i], io::require(m, key, f), 2e-4);
    }
    expect_close("bert pooler", net->pooler(states.back()), io::require(m, "pooled", f), 2e-4);
  }
}

TEST(Reference, ClassificationMetricsMatchSklearn) {
  for (const auto& f : reference_files("sklearn_metrics", {""})) {
    const io::TensorMap m = io::load_tensor_file(f);
    const torch::Tensor scores = io::require(m, "scores", f), labels = io::require(m, "labels", f);
    const torch::Tensor auc = io::require(m, "auc", f);
    for (int64_t k = 0; k < scores.size(1); ++k) {
      const torch::Tensor s = scores.select(1, k).contiguous(), y = labels.select(1, k).to(torch::kInt).contiguous();
      const double got = eval::roc_auc(std::vector<double>(s.data_ptr<double>(), s.data_ptr<double>() + s.numel()),
                                       std::vector<int>(y.data_ptr<int>(), y.data_ptr<int>() + y.numel()));
      std::printf("[reference] roc_auc column %lld: %.12f vs sklearn %.12f\n", static_cast<long long>(k), got, auc[k].item<double>());
      EXPECT_NEAR(got, auc[k].item<double>(), 1e-12);
    }
    const torch::Tensor yt = io::require(m, "y_true", f).to(torch::kInt).contiguous(), yp = io::require(m, "y_pred", f).to(torch::kInt).contiguous();
    const double b = eval::balanced_accuracy(std::vector<int>(yt.data_ptr<int>(), yt.data_ptr<int>() + yt.numel()),
                                             std::vector<int>(yp.data_ptr<int>(), yp.data_ptr<int>() + yp.numel()));
    EXPECT_NEAR(b, io::require(m, "balanced_accuracy", f).item<double>(), 1e-12);
  }
}

}  // namespace
}  // namespace afloc::test
