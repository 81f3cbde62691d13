// DICOM reading against pydicom (scripts/gen_dicom_reference.py, run by CTest as a fixture):
// stored values of the first frame for every transfer syntax, and the 8-bit conversion (rescale,
// VOI window or min-max, MONOCHROME1 inversion; the authors' read_from_dicom mode).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include <unistd.h>

#include "afloc/common/error.h"
#include "afloc/data/dicom.h"
#include "afloc/data/image.h"
#include "afloc/data/prepare.h"
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

// JPEG files above 8 bits (12-bit extended, 8- and 16-bit lossless), which OpenCV's libjpeg-turbo
// cannot decode, read through GDCM as the DICOMs they came from decode in pydicom; deeper than 8
// bits, stretched min-max as 16-bit PNGs are. A stream wrapped wrongly would differ or fail.
TEST(Dicom, JpegFilesAbove8BitsMatchTheirDicomsValues) {
  const std::string dir = dicom_dir();
  ASSERT_TRUE(std::filesystem::exists(dir + "/jpegs.json")) << "run scripts/gen_dicom_reference.py --out " << dir;
  const auto jpegs = nlohmann::json::parse(read_file(dir + "/jpegs.json"));
  const io::TensorMap ref = io::load_tensor_file(dir + "/dicom_reference.pt");
  ASSERT_EQ(jpegs.size(), 3u);
  for (const auto& c : jpegs) {
    const std::string file = c["file"], key = c["key"];
    SCOPED_TRACE(file);
    const data::Gray8 g = data::read_gray8(file);
    const torch::Tensor want = ref.at(key + ".gray8").to(torch::kLong);
    ASSERT_EQ(g.height, want.size(0));
    ASSERT_EQ(g.width, want.size(1));
    EXPECT_EQ(data::to_tensor(g).to(torch::kLong).ne(want).sum().item<int64_t>(), 0);
    EXPECT_GT(want.max().item<int64_t>(), want.min().item<int64_t>());  // a real image, not a flat one
  }
  // The same stream cut short is an error naming the file, not a crash or a grey fill.
  const std::string whole = read_file(jpegs[2]["file"].get<std::string>());
  const std::string cut = (std::filesystem::path(::testing::TempDir()) / "afloc_jpeg16_cut.jpg").string();
  std::ofstream(cut, std::ios::binary) << whole.substr(0, whole.size() / 2);
  try {
    data::read_gray8(cut);
    ADD_FAILURE() << "a 16-bit JPEG cut in half was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(cut), std::string::npos) << e.what();
  }
  std::filesystem::remove(cut);
}

// The DICOM conversion a run or a prepared set asks for (data.dicom_voi, --dicom-voi) is the one
// applied: a windowed MONOCHROME1 film prepared with each mode holds that mode's pixels, resized.
TEST(Dicom, PreparedImagesFollowTheAskedConversion) {
  const std::string file = dicom_dir() + "/cr_monochrome1.dcm";
  ASSERT_TRUE(std::filesystem::exists(file)) << "run scripts/gen_dicom_reference.py";
  const data::DicomImage d = data::read_dicom(file);
  std::vector<std::vector<uint8_t>> seen;
  for (const char* mode : {"auto", "minmax", "authors"}) {
    SCOPED_TRACE(mode);
    data::PrepareOptions po;
    po.out = (std::filesystem::path(::testing::TempDir()) / ("afloc_prep_voi_" + std::to_string(::getpid()) + mode)).string();
    std::filesystem::remove_all(po.out);
    po.size = 32;
    po.read.dicom_voi = data::parse_dicom_voi(mode);
    const auto r = data::prepare_images({data::Sample{"cr", file, "Report.", "train", ""}}, po);
    ASSERT_EQ(r.written, 1);
    data::ManifestOptions man;
    man.path = r.manifest;
    const data::Gray8 got = data::read_gray8(data::read_manifest(man).samples.at(0).image);
    data::Gray8 want;
    want.height = d.rows;
    want.width = d.cols;
    want.pixels = data::dicom_to_gray8(d, po.read.dicom_voi);
    EXPECT_EQ(got.pixels, data::resize_pad(want, 32).pixels);
    seen.push_back(got.pixels);
    std::filesystem::remove_all(po.out);
  }
  EXPECT_NE(seen[0], seen[1]);  // the window makes auto differ from min-max
  EXPECT_NE(seen[1], seen[2]);
  EXPECT_THROW(data::parse_dicom_voi("window"), Error);
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

TEST(Dicom, FilesCutShortAreErrorsNeverCrashesOrZeros) {
  // Debian's GDCM is built with assertions and aborts the process on many cut points of a file
  // (and pads short native pixel data with zeros); read_dicom checks the element lengths first and
  // decodes in its helper process.
  const std::string dir = dicom_dir();
  ASSERT_TRUE(std::filesystem::exists(dir + "/cases.json"));
  const auto cases = nlohmann::json::parse(read_file(dir + "/cases.json"));
  const std::string cut = ::testing::TempDir() + "/afloc_cut.dcm";
  int errors = 0, same = 0;
  for (const auto& c : cases) {
    const std::string file = c["file"];
    const std::string bytes = read_file(file);
    const std::vector<uint8_t> whole = data::read_gray8(file).pixels;
    std::vector<size_t> keep = {bytes.size() - 1, bytes.size() - 2, bytes.size() - 4, bytes.size() - 8};
    for (size_t k = 1; k < 24; ++k) keep.push_back(132 + (bytes.size() - 132) * k / 24);
    for (const size_t n : keep) {
      std::ofstream(cut, std::ios::binary | std::ios::trunc) << bytes.substr(0, n);
      if (std::getenv("AFLOC_TRACE_CUTS")) std::fprintf(stderr, "%s %zu\n", file.c_str(), n);
      try {
        const data::Gray8 g = data::read_gray8(cut);
        // A cut that only drops trailing elements may leave a whole image: then it must be the same.
        EXPECT_EQ(g.pixels, whole) << file << " cut to " << n << " of " << bytes.size() << " bytes was read differently";
        ++same;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(cut), std::string::npos) << e.what();
        ++errors;
      }
    }
  }
  std::printf("[dicom] cut files: %d refused, %d read whole\n", errors, same);
  EXPECT_GT(errors, 300);
}

TEST(Dicom, AFileThatMakesGdcmAbortIsAnError) {
  // A planar configuration (0028,0006) of 5 passes the length walk, and Debian's GDCM asserts on it
  // (Bitmap::SetPlanarConfiguration: pc == 0 || pc == 1), aborting its process: read_dicom decodes
  // in the afloc-dicom helper process, so this process gets an Error naming the file instead.
  const std::string rgb = dicom_dir() + "/rgb.dcm";
  ASSERT_TRUE(std::filesystem::exists(rgb));
  std::string bytes = read_file(rgb);
  const std::string planar("\x28\x00\x06\x00US\x02\x00", 8);
  const size_t at = bytes.find(planar);
  ASSERT_NE(at, std::string::npos) << "no explicit-VR planar configuration in " << rgb;
  bytes[at + 8] = 5;
  const std::string bad = ::testing::TempDir() + "/afloc_planar5.dcm";
  std::ofstream(bad, std::ios::binary | std::ios::trunc) << bytes;
  try {
    data::read_dicom(bad);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(bad), std::string::npos) << what;
    EXPECT_NE(what.find("GDCM stopped"), std::string::npos) << what;
  }
  // The helper starts again after the abort, and decodes as this process does.
  EXPECT_EQ(data::read_dicom(rgb).stored, data::read_dicom(rgb, false).stored);
}

TEST(Dicom, HelperDecodesInParallelWhileMatrixProductsRun) {
  // A training run reads DICOMs in loader threads while the model multiplies matrices on OpenBLAS's
  // threads. A fork() there runs OpenBLAS's pthread_atfork handler, which stops its workers under
  // the running product and hangs it; the helper is started with posix_spawn, which runs none.
  const std::string file = dicom_dir() + "/cr_monochrome1.dcm";
  ASSERT_TRUE(std::filesystem::exists(file));
  const std::vector<double> want = data::read_dicom(file, false).stored;
  at::set_num_threads(2);
  std::atomic<bool> stop{false};
  std::atomic<int> products{0};
  std::thread maths([&] {
    torch::Tensor a = torch::randn({384, 384});
    while (!stop) {
      a = torch::mm(a, a).tanh();
      ++products;
    }
  });
  std::atomic<int> same{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      for (int i = 0; i < 15; ++i) same += data::read_dicom(file).stored == want ? 1 : 0;
    });
  }
  for (auto& r : readers) r.join();
  stop = true;
  maths.join();
  EXPECT_EQ(same.load(), 45);
  EXPECT_GT(products.load(), 0);
}

}  // namespace
}  // namespace afloc::test
