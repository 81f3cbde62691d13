// Golden: the authors' image preprocessing (`process_img`: cv2.imread(path, 0), `_resize_img` with
// INTER_AREA and floor/ceil zero padding, ToTensor + Normalize(0.5, 0.5)).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "afloc/common/error.h"
#include "afloc/data/image.h"
#include "afloc/data/phantom_writer.h"
#include "afloc/io/tensor_file.h"
#include "golden.h"
#include "tensor_compare.h"

namespace afloc::test {
namespace {

TEST(GoldenImage, ReadResizePadAndNormaliseMatchTheAuthors) {
  const auto files = golden_files("process_img", ".pt");
  AFLOC_REQUIRE_CASES(files, "process_img*.pt");
  for (const auto& file : files) {
    SCOPED_TRACE(file);
    const io::TensorMap c = io::load_tensor_file(file);
    const std::string stem = file.substr(0, file.size() - 3);  // .../process_img
    int checked = 0;
    for (const char* name : {"tall", "wide"}) {
      const std::string png = stem + "_" + name + ".png";
      if (!c.count(std::string(name) + ".original_uint8") || !std::ifstream(png).good()) continue;
      ++checked;
      const data::Gray8 img = data::read_gray8(png);
      const torch::Tensor original = c.at(std::string(name) + ".original_uint8");
      EXPECT_TRUE(torch::equal(data::to_tensor(img), original)) << png << ": decoded pixels differ";
      const torch::Tensor resized = data::to_tensor(data::resize_pad(img, 224));
      const torch::Tensor expected = c.at(std::string(name) + ".resized_padded_uint8");
      const int64_t differ = resized.ne(expected).sum().item<int64_t>();
      std::printf("[golden] process_img %-5s resize_pad: %lld of %lld pixels differ\n", name,
                  static_cast<long long>(differ), static_cast<long long>(expected.numel()));
      EXPECT_EQ(differ, 0);
      const torch::Tensor x = data::preprocess(img, 224);
      const torch::Tensor want = ((expected.to(torch::kFloat) / 255.0f - 0.5f) / 0.5f).unsqueeze(0).expand({3, 224, 224});
      expect_close(std::string("process_img ") + name + " tensor", x, want, 1e-7);
    }
    EXPECT_GT(checked, 0) << "no image cases in " << file;
  }
  // The full official process_img output of the tall PNG is image_encoder_case.pt input[0].
  const std::string enc = golden_dir() + "/image_encoder_case.pt";
  const std::string tall = golden_dir() + "/process_img_tall.png";
  if (std::ifstream(enc).good() && std::ifstream(tall).good()) {
    const torch::Tensor want = io::require(io::load_tensor_file(enc), "input", enc)[0];
    expect_close("process_img(tall) == image_encoder_case input[0]", data::preprocess(data::read_gray8(tall), 224),
                 want, 1e-7);
  }
}

TEST(Image, BadFilesAreErrorsNamingTheFile) {
  const std::string junk = ::testing::TempDir() + "/afloc_not_an_image.png";
  std::ofstream(junk) << "this is not a png";
  try {
    data::read_gray8(junk);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(junk), std::string::npos) << e.what();
  }
  EXPECT_THROW(data::read_gray8("/nonexistent/x.png"), Error);
  data::ImageReadOptions small;
  small.max_pixels = 100;
  const std::string tall = golden_dir() + "/process_img_tall.png";
  if (std::ifstream(tall).good()) {
    EXPECT_THROW(data::read_gray8(tall, small), Error);
  }
  // Headers claiming 100000 x 70000 pixels: refused from the header, before any decoding.
  const std::string png = ::testing::TempDir() + "/afloc_huge.png", jpg = ::testing::TempDir() + "/afloc_huge.jpg";
  auto write_bytes = [](const std::string& f, std::initializer_list<int> bytes) {
    std::string out;
    for (int v : bytes) out += static_cast<char>(v);
    std::ofstream(f, std::ios::binary) << out;
  };
  // PNG signature, IHDR length 13, "IHDR", width 100000, height 70000, depth 8, grey.
  write_bytes(png, {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                    0, 0x01, 0x86, 0xa0, 0, 0x01, 0x11, 0x70, 8, 0, 0, 0, 0});
  // SOI, an APP0 segment of length 4, then SOF0 (precision 8, height 4464, width 65000, 1 component).
  write_bytes(jpg, {0xff, 0xd8, 0xff, 0xe0, 0, 4, 'a', 'b', 0xff, 0xc0, 0, 11, 8, 0x11, 0x70, 0xfd, 0xe8, 1, 1, 0x11, 0, 0, 0});
  for (const auto& [f, dims] : {std::pair{png, std::string("100000x70000")}, std::pair{jpg, std::string("65000x4464")}}) {
    try {
      data::read_gray8(f);
      FAIL() << f << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(dims + " exceeds the decode limit"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("not decoded"), std::string::npos) << e.what();
    }
  }
}

TEST(Image, TruncatedFilesAreErrorsNamingTheFile) {
  // OpenCV decodes a JPEG cut short without an error (libjpeg only warns and fills grey rows), so
  // read_gray8 checks for the end-of-image marker itself; a cut PNG fails in libpng.
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(::testing::TempDir()) / "afloc_truncated";
  fs::remove_all(dir);
  data::phantom::SynthOptions o;
  o.out = (dir / "world").string();
  o.n_train = 1;
  o.n_val = 0;
  o.n_test = 1;
  o.size = 96;
  o.seed = 3;
  o.progress = false;
  data::phantom::write_phantom_world(o);
  auto first_file = [](const fs::path& folder, const std::string& ext) {
    for (const auto& e : fs::recursive_directory_iterator(folder)) {
      if (e.path().extension() == ext) return e.path().string();
    }
    return std::string();
  };
  auto write_bytes = [](const fs::path& f, const std::string& bytes) { std::ofstream(f, std::ios::binary) << bytes; };
  const std::string jpeg_path = first_file(dir / "world" / "mimic-cxr-jpg" / "files", ".jpg");
  ASSERT_FALSE(jpeg_path.empty());
  const std::string jpeg = read_file(jpeg_path);
  const data::Gray8 film = data::read_gray8(jpeg_path);
  // Bytes after the end-of-image marker (some writers pad) change nothing.
  write_bytes(dir / "padded.jpg", jpeg + std::string(64, '\0'));
  EXPECT_EQ(data::read_gray8((dir / "padded.jpg").string()).pixels, film.pixels);
  for (const size_t keep : {jpeg.size() - 2, jpeg.size() / 2, size_t{400}}) {
    const std::string cut = (dir / ("cut_" + std::to_string(keep) + ".jpg")).string();
    write_bytes(cut, jpeg.substr(0, keep));
    try {
      data::read_gray8(cut);
      ADD_FAILURE() << cut << ": a JPEG of " << keep << " of its " << jpeg.size() << " bytes was read";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(cut), std::string::npos) << e.what();
    }
  }
  const std::string png_path = first_file(dir / "world" / "siim", ".png");
  ASSERT_FALSE(png_path.empty());
  const std::string png = read_file(png_path);
  write_bytes(dir / "cut.png", png.substr(0, png.size() / 2));
  EXPECT_THROW(data::read_gray8((dir / "cut.png").string()), Error);
  fs::remove_all(dir);
}

TEST(Image, ResizePadGeometry) {
  data::Gray8 g;
  g.height = 10;
  g.width = 4;
  g.pixels.assign(40, 200);
  const data::Gray8 r = data::resize_pad(g, 20);
  ASSERT_EQ(r.height, 20);
  ASSERT_EQ(r.width, 20);
  // width 4 * 2 = 8, pad 12: 6 left, 6 right
  EXPECT_EQ(r.pixels[static_cast<size_t>(5)], 0);
  EXPECT_EQ(r.pixels[static_cast<size_t>(6)], 200);
  EXPECT_EQ(r.pixels[static_cast<size_t>(13)], 200);
  EXPECT_EQ(r.pixels[static_cast<size_t>(14)], 0);
  g.height = 3;
  g.width = 7;  // wide: height int(3 * 20/7) = 8, pad 12 -> 6 top, 6 bottom
  g.pixels.assign(21, 9);
  const data::Gray8 w = data::resize_pad(g, 20);
  EXPECT_EQ(w.pixels[static_cast<size_t>(5 * 20)], 0);
  EXPECT_EQ(w.pixels[static_cast<size_t>(6 * 20)], 9);
  EXPECT_EQ(w.pixels[static_cast<size_t>(13 * 20)], 9);
  EXPECT_EQ(w.pixels[static_cast<size_t>(14 * 20)], 0);
}

}  // namespace
}  // namespace afloc::test
