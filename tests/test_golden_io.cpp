// Golden: the authors' PyTorch Lightning checkpoint layout (checkpoint_format.ckpt, with callbacks
// keyed by class objects and an OmegaConf config that torch.load cannot resolve) read without
// unpickling anything foreign; every state_dict tensor must come out exactly.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "afloc/common/error.h"
#include "afloc/io/tensor_file.h"
#include "afloc/io/torch_checkpoint.h"
#include "golden.h"
#include "tensor_compare.h"

namespace afloc::test {
namespace {

TEST(GoldenCheckpoint, LightningCheckpointTensorsWithoutUnpicklingForeignObjects) {
  const auto files = golden_files("checkpoint_format", ".ckpt");
  AFLOC_REQUIRE_CASES(files, "checkpoint_format*.ckpt");
  for (const auto& file : files) {
    SCOPED_TRACE(file);
    const std::string stem = file.substr(0, file.size() - 5);
    const auto j = nlohmann::json::parse(read_file(stem + ".json"));
    const io::TensorMap expected = io::load_tensor_file(stem + "_expected.pt");
    const io::CheckpointContents c = io::read_torch_checkpoint(file);
    EXPECT_EQ(c.top_level, j["top_level_keys_in_order"].get<std::vector<std::string>>());
    for (const auto& g : j["unpicklable_globals"]) {
      EXPECT_NE(std::find(c.foreign.begin(), c.foreign.end(), g.get<std::string>()), c.foreign.end()) << g;
    }
    const io::TensorMap sd = io::select_prefix(c.tensors, "state_dict.");
    ASSERT_EQ(sd.size(), expected.size());
    int64_t exact = 0;
    for (const auto& row : j["state_dict"]) {
      const std::string key = row[0];
      ASSERT_TRUE(sd.count(key)) << key;
      const torch::Tensor& t = sd.at(key);
      EXPECT_EQ(t.sizes().vec(), row[1].get<std::vector<int64_t>>()) << key;
      EXPECT_EQ(std::string(c10::toString(t.scalar_type())) == "Long" ? "int64" : "float32", row[2].get<std::string>()) << key;
      exact += torch::equal(t, expected.at(key));
    }
    std::printf("[golden] checkpoint_format: %lld of %zu state_dict tensors identical; %zu foreign globals left inert\n",
                static_cast<long long>(exact), expected.size(), c.foreign.size());
    EXPECT_EQ(exact, static_cast<int64_t>(expected.size()));
  }
}

TEST(TorchCheckpoint, NotAnArchiveIsAnErrorNamingTheFile) {
  const std::string junk = ::testing::TempDir() + "/afloc_not_a_ckpt.ckpt";
  { std::ofstream(junk) << "PK but not really"; }
  try {
    io::read_torch_checkpoint(junk);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(junk), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace afloc::test
