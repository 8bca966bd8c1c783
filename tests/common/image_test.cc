// Preprocessing: our bilinear resize against Pillow's (the fixtures are
// Pillow's own output, see tests/python/make_fixtures.py), RGB conversion,
// normalization and the PNG/JPEG decoders.
#include "common/image.h"

#include <gtest/gtest.h>

#include "common/file.h"

#include <cstdlib>

namespace intgrads {
namespace {

std::string ReadFile(const std::string& path) { return ReadWholeFile(path).ok() ? *ReadWholeFile(path) : ""; }

struct ResizeCase {
  std::string name;
  int width, height;
};

class PillowResize : public ::testing::TestWithParam<ResizeCase> {};

TEST_P(PillowResize, AgreesWithinOneGreyLevel) {
  const ResizeCase& c = GetParam();
  const std::string dir = INTGRADS_FIXTURE_DIR;
  auto image = ReadImageFile(dir + "/resize_" + c.name + ".png");
  if (!image.ok()) GTEST_SKIP() << "fixtures missing (tests/python/make_fixtures.py): " << image.status().message();
  const std::string expected =
      ReadFile(dir + "/resize_" + c.name + "_" + std::to_string(c.width) + "x" + std::to_string(c.height) + ".bin");
  const Image resized = ResizeBilinear(ToRgb(*image), c.width, c.height);
  ASSERT_EQ(resized.pixels.size(), expected.size());
  int worst = 0;
  size_t exact = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const int diff = std::abs(static_cast<int>(resized.pixels[i]) - static_cast<uint8_t>(expected[i]));
    worst = std::max(worst, diff);
    exact += diff == 0;
  }
  EXPECT_LE(worst, 1);
  // Same fixed-point arithmetic as Pillow: in practice every pixel is equal.
  EXPECT_EQ(exact, expected.size());
}

INSTANTIATE_TEST_SUITE_P(Sizes, PillowResize,
                         ::testing::Values(ResizeCase{"same", 32, 32}, ResizeCase{"down2", 32, 32},
                                           ResizeCase{"down3", 32, 32}, ResizeCase{"down_big", 32, 32},
                                           ResizeCase{"odd", 32, 32}, ResizeCase{"up", 32, 32},
                                           ResizeCase{"mixed", 24, 36}, ResizeCase{"grey", 32, 32},
                                           ResizeCase{"photo_like", 32, 32}),
                         [](const auto& info) { return info.param.name; });

TEST(Image, FileNamesByTheirExtension) {
  for (const char* name : {"a.png", "b.jpg", "C.JPEG", "dir.v2/cat.Jpg", "train/cat/0001.jpeg"}) {
    EXPECT_TRUE(HasImageExtension(name)) << name;
  }
  for (const char* name : {"", "png", "a.png.txt", "a.gif", "dir.png/readme", "a.", ".jpgx"}) {
    EXPECT_FALSE(HasImageExtension(name)) << name;
  }
}

TEST(Image, GreyAndRgbaBecomeRgb) {
  Image grey{1, 2, 1, {10, 20}};
  Image rgb = ToRgb(grey);
  EXPECT_EQ(rgb.pixels, (std::vector<uint8_t>{10, 10, 10, 20, 20, 20}));
  Image rgba{1, 1, 4, {1, 2, 3, 4}};
  EXPECT_EQ(ToRgb(rgba).pixels, (std::vector<uint8_t>{1, 2, 3}));
}

TEST(Image, NormalizesChannelsFirst) {
  Image rgb{1, 2, 3, {0, 255, 51, 255, 0, 102}};
  const auto chw = NormalizeChw(rgb, {{0.5F, 0.5F, 0.5F}, {0.5F, 0.5F, 0.5F}});
  ASSERT_EQ(chw.size(), 6U);
  EXPECT_FLOAT_EQ(chw[0], -1.0F);  // R of pixel 0
  EXPECT_FLOAT_EQ(chw[1], 1.0F);   // R of pixel 1
  EXPECT_FLOAT_EQ(chw[2], 1.0F);   // G of pixel 0
  EXPECT_FLOAT_EQ(chw[4], (51.0F / 255.0F - 0.5F) / 0.5F);
}

TEST(Image, DecodersRefuseGarbageAndTruncation) {
  EXPECT_FALSE(DecodeImage("GIF89a").ok());
  EXPECT_FALSE(DecodeImage("").ok());
  const std::string dir = INTGRADS_FIXTURE_DIR;
  const std::string png = ReadFile(dir + "/resize_down2.png");
  if (png.empty()) GTEST_SKIP() << "fixtures missing";
  ASSERT_TRUE(DecodeImage(png).ok());
  for (size_t cut : {size_t{8}, size_t{40}, png.size() / 2, png.size() - 20}) {
    EXPECT_FALSE(DecodeImage(png.substr(0, cut)).ok()) << cut;
  }
  std::string jpeg("\xff\xd8\xff\xe0\x00\x10JFIF", 10);
  EXPECT_FALSE(DecodeImage(jpeg).ok());
}

}  // namespace
}  // namespace intgrads
