// DICOM reading against pydicom (scripts/gen_dicom_reference.py, run by CTest as a fixture):
// stored values of the first frame for every transfer syntax, and the 8-bit conversion (rescale,
// VOI window or min-max, MONOCHROME1 inversion; the authors' read_from_dicom mode).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "afloc/common/error.h"
#include "afloc/data/dicom.h"
#include "afloc/data/image.h"
#include "afloc/io/tensor_file.h"
#include "golden.h"
#include "tensor_compare.h"

namespace afloc::test {
namespace {

std::string dicom_dir() {
  const char* env = std::getenv("AFLOC_DICOM_REFERENCE_DIR");
  return env ? env : std::string(AFLOC_BINARY_DIR) + "/reference/dicom";
}

TEST(Dicom, MatchesPydicomOnEveryTransferSyntax) {
  const std::string dir = dicom_dir();
  ASSERT_TRUE(std::filesystem::exists(dir + "/cases.json"))
      << "run scripts/gen_dicom_reference.py --out " << dir << " (CTest does it as a fixture)";
  const auto cases = nlohmann::json::parse(read_file(dir + "/cases.json"));
  const io::TensorMap ref = io::load_tensor_file(dir + "/dicom_reference.pt");
  ASSERT_GE(cases.size(), 10u);
  for (const auto& c : cases) {
    const std::string file = c["file"], key = c["key"];
    SCOPED_TRACE(file);
    const data::DicomImage d = data::read_dicom(file);
    EXPECT_EQ(d.photometric, c["photometric"].get<std::string>());
    EXPECT_EQ(d.frames, c["frames"].get<int64_t>());
    const torch::Tensor stored = torch::tensor(d.stored, torch::kDouble).reshape({d.rows, d.cols});
    const torch::Tensor want = ref.at(key + ".stored");
    // RGB -> grey is a weighted sum in double on both sides.
    const double tol = d.samples_per_pixel == 3 ? 1e-9 : 0.0;
    expect_close("dicom stored " + std::filesystem::path(file).filename().string() + " (" +
                     c["transfer_syntax"].get<std::string>() + ")",
                 stored, want, tol);
    for (const auto& [mode, voi] : {std::pair{"auto", data::DicomVoi::kAuto}, std::pair{"minmax", data::DicomVoi::kMinMax},
                                    std::pair{"authors", data::DicomVoi::kAuthors}}) {
      const std::vector<uint8_t> g = data::dicom_to_gray8(d, voi);
      const torch::Tensor got = torch::tensor(std::vector<int64_t>(g.begin(), g.end())).reshape({d.rows, d.cols});
      const int64_t differ = got.ne(ref.at(key + "." + mode).to(torch::kLong)).sum().item<int64_t>();
      EXPECT_EQ(differ, 0) << mode;
    }
    // read_gray8 recognises the file as DICOM and applies the default (auto) conversion.
    const data::Gray8 g = data::read_gray8(file);
    EXPECT_TRUE(torch::equal(data::to_tensor(g).to(torch::kLong), ref.at(key + ".auto").to(torch::kLong)));
  }
}

TEST(Dicom, Monochrome1IsInvertedAndWindowed) {
  const std::string file = dicom_dir() + "/cr_monochrome1.dcm";
  ASSERT_TRUE(std::filesystem::exists(file));
  const data::DicomImage d = data::read_dicom(file);
  EXPECT_DOUBLE_EQ(d.slope, 2.0);
  EXPECT_DOUBLE_EQ(d.intercept, -100.0);
  ASSERT_TRUE(d.has_window);
  EXPECT_DOUBLE_EQ(d.window_center, 3000.0);
  EXPECT_DOUBLE_EQ(d.window_width, 4000.0);
  // Stored values rise left to right; MONOCHROME1 means the 8-bit image gets darker.
  const auto g = data::dicom_to_gray8(d);
  EXPECT_GT(g[0], g[static_cast<size_t>(d.cols - 1)]);
}

TEST(Dicom, BadFilesAreErrorsNamingTheFile) {
  const std::string junk = ::testing::TempDir() + "/afloc_truncated.dcm";
  {
    // A DICOM preamble and nothing else.
    std::ofstream out(junk, std::ios::binary);
    out << std::string(128, '\0') << "DICM" << std::string(10, '\x01');
  }
  EXPECT_TRUE(data::is_dicom(junk));
  try {
    data::read_gray8(junk);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(junk), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace afloc::test
