// The payload formats read back: the npz's .npy headers and bytes, the
// JSON's numbers, the heatmap PNG's pixels. (Real numpy, Pillow and torch
// read them in tests/python/test_api.py.)
#include "worker/formats/formats.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/zip.h"
#include "worker/formats/heatmap.h"

namespace intgrads {
namespace {

Attribution Example() {
  torch::manual_seed(3);
  Attribution a;
  a.integrated_grads = torch::randn({1, 3, 4, 4});
  a.path_gradients = torch::randn({5, 3, 4, 4});
  a.step_sizes = torch::full({5, 1}, 0.2F);
  a.path_points = torch::randn({5, 3, 4, 4});
  a.logits = torch::tensor({{1.0F, 3.0F, 2.0F}});
  a.target = 2;
  a.convergence_delta = -0.125;
  return a;
}

const std::vector<std::string> kClasses = {"a", "b", "c"};
const torch::Tensor kInput = torch::arange(48, torch::kFloat32).view({1, 3, 4, 4});

TEST(Formats, ProbabilitiesAreTheSoftmax) {
  const auto p = Probabilities(torch::tensor({{1.0F, 3.0F, 2.0F}}));
  ASSERT_EQ(p.size(), 3U);
  EXPECT_NEAR(p[1], std::exp(3.0) / (std::exp(1.0) + std::exp(3.0) + std::exp(2.0)), 1e-12);
  EXPECT_NEAR(p[0] + p[1] + p[2], 1.0, 1e-12);
}

TEST(Formats, NpzHoldsNpyFilesOfTheDictsKeys) {
  const Attribution a = Example();
  const Explanation e{&a, &kInput, &kClasses, Probabilities(a.logits), Method::kGaussLegendre, 5};
  const std::string npz = EncodeNpz(e);
  auto entries = ReadZip(npz);
  ASSERT_TRUE(entries.ok()) << entries.status().message();
  std::map<std::string, std::string_view> files;
  for (const ZipEntry& entry : *entries) files[entry.name] = entry.data;
  for (const char* key : {"integrated_grads", "integrated_directional_grads", "step_sizes", "intermediates", "output",
                          "target_class", "probabilities", "convergence_delta", "input"}) {
    ASSERT_EQ(files.count(std::string(key) + ".npy"), 1U) << key;
  }
  const std::string_view ig = files["integrated_grads.npy"];
  ASSERT_EQ(ig.substr(0, 8), std::string_view("\x93NUMPY\x01\x00", 8));
  const size_t header =
      static_cast<unsigned char>(ig[8]) | (static_cast<size_t>(static_cast<unsigned char>(ig[9])) << 8);
  EXPECT_EQ((10 + header) % 64, 0U);
  const std::string_view dict = ig.substr(10, header);
  EXPECT_NE(dict.find("'descr': '<f4'"), std::string_view::npos);
  EXPECT_NE(dict.find("'shape': (1, 3, 4, 4)"), std::string_view::npos);
  ASSERT_EQ(ig.size(), 10 + header + size_t{48} * 4);
  float first = 0;
  std::memcpy(&first, ig.data() + 10 + header, 4);
  EXPECT_EQ(first, a.integrated_grads.flatten()[0].item<float>());
  const std::string_view target = files["target_class.npy"];
  EXPECT_NE(target.find("'shape': ()"), std::string_view::npos);
  int64_t t = 0;
  std::memcpy(&t, target.data() + target.size() - 8, 8);
  EXPECT_EQ(t, 2);
  EXPECT_NE(files["probabilities.npy"].find("'shape': (3,)"), std::string_view::npos);
  EXPECT_EQ(files.count("path_inputs.npy"), 0U);  // on the original path
}

TEST(Formats, JsonHoldsTheSameNumbers) {
  Attribution a = Example();
  a.path_points[0][0][0][0] = std::numeric_limits<float>::quiet_NaN();
  const Explanation e{&a, &kInput, &kClasses, Probabilities(a.logits), Method::kScan, 5};
  const auto doc = nlohmann::json::parse(EncodeJson(e));
  EXPECT_EQ(doc["target_class"], 2);
  EXPECT_EQ(doc["target_name"], "c");
  EXPECT_EQ(doc["predicted_class"], 1);
  EXPECT_EQ(doc["predicted_name"], "b");
  EXPECT_EQ(doc["method"], "scan");
  EXPECT_DOUBLE_EQ(doc["convergence_delta"].get<double>(), -0.125);
  ASSERT_EQ(doc["integrated_directional_grads"].size(), 5U);
  ASSERT_EQ(doc["integrated_directional_grads"][4][2][3].size(), 4U);
  // Shortest round-trip text: each float32 comes back exactly.
  EXPECT_EQ(doc["integrated_directional_grads"][4][2][3][1].get<float>(), a.path_gradients[4][2][3][1].item<float>());
  EXPECT_TRUE(doc["intermediates"][0][0][0][0].is_null());  // NaN has no JSON form
  EXPECT_EQ(doc["step_sizes"][0][0].get<float>(), 0.2F);
  EXPECT_EQ(doc["input"][0][2][3][3].get<float>(), 47.0F);
  EXPECT_FALSE(doc.contains("path_inputs"));  // on the original path
}

TEST(Formats, HeatmapIsAPngWithTheOverlayAndCaption) {
  Attribution a = Example();
  a.integrated_grads.zero_();
  a.integrated_grads[0][0][1][2] = 1.0F;   // one strongly positive pixel
  a.integrated_grads[0][1][3][0] = -1.0F;  // one strongly negative pixel
  const Explanation e{&a, &kInput, &kClasses, Probabilities(a.logits), Method::kGaussLegendre, 5};
  Image input;
  input.height = input.width = 4;
  input.pixels.assign(48, 128);
  auto png = EncodeHeatmapPng(e, input, {Heatmap::kSigned, Sign::kNone, 2.0});
  ASSERT_TRUE(png.ok()) << png.status().message();
  auto image = DecodeImage(*png);
  ASSERT_TRUE(image.ok());
  EXPECT_EQ(image->width, 4 * 64 + 8);  // 4 x 4 zoomed to 256, with margins
  auto pixel = [&](int y, int x, int c) { return static_cast<int>(image->at(y, x, c)); };
  const int zoom = 64, margin = 4;
  // Red where IG is positive, blue where negative, the grey input elsewhere.
  EXPECT_GT(pixel(margin + 1 * zoom + 5, margin + 2 * zoom + 5, 0), 200);
  EXPECT_LT(pixel(margin + 1 * zoom + 5, margin + 2 * zoom + 5, 2), 60);
  EXPECT_GT(pixel(margin + 3 * zoom + 5, margin + 0 * zoom + 5, 2), 200);
  EXPECT_EQ(pixel(margin + 5, margin + 5, 0), pixel(margin + 5, margin + 5, 2));
  // The caption is drawn: dark pixels below the colour scale.
  int dark = 0;
  for (int y = margin + 256 + margin + 12; y < image->height; ++y) {
    for (int x = 0; x < image->width; ++x) dark += pixel(y, x, 0) < 60 ? 1 : 0;
  }
  EXPECT_GT(dark, 200);
  EXPECT_TRUE(EncodeHeatmapPng(e, input, {Heatmap::kAbsolute, Sign::kNone, 2.0}).ok());
  input.width = 3;
  EXPECT_FALSE(EncodeHeatmapPng(e, input, {Heatmap::kSigned, Sign::kNone, 2.0}).ok());
}

// Captum's look: its colour maps blended half and half over the input in grey.
TEST(Formats, CaptumsLookIsItsColourMapOverTheGreyInput) {
  Attribution a = Example();
  a.integrated_grads.zero_();
  a.integrated_grads[0][0][1][2] = 1.0F;
  a.integrated_grads[0][1][3][0] = -1.0F;
  const Explanation e{&a, &kInput, &kClasses, Probabilities(a.logits), Method::kGaussLegendre, 5};
  Image input;
  input.height = input.width = 4;
  input.pixels.assign(48, 128);
  input.pixels[0] = input.pixels[1] = input.pixels[2] = 255;  // one white pixel: the grey map's top
  const int zoom = 64, margin = 4;
  for (const Sign sign : {Sign::kAll, Sign::kPositive, Sign::kNegative, Sign::kAbsoluteValue}) {
    auto png = EncodeHeatmapPng(e, input, {Heatmap::kSigned, sign, 2.0});
    ASSERT_TRUE(png.ok()) << png.status().message();
    auto image = DecodeImage(*png);
    ASSERT_TRUE(image.ok());
    auto pixel = [&](int y, int x) {
      const int py = margin + y * zoom + 5, px = margin + x * zoom + 5;
      return std::array<int, 3>{image->at(py, px, 0), image->at(py, px, 1), image->at(py, px, 2)};
    };
    auto expected = [&](double normalized, double grey) {
      const Rgb c = CaptumColour(sign, ColourMapPosition(sign, normalized));
      std::array<int, 3> out{};
      for (int k = 0; k < 3; ++k) out[k] = static_cast<int>(std::lround(255 * (0.5 * c[k] + 0.5 * grey)));
      return out;
    };
    const double positive = sign == Sign::kNegative ? 0.0 : 1.0;
    const double negative = sign == Sign::kAll ? -1.0 : sign == Sign::kPositive ? 0.0 : 1.0;
    EXPECT_EQ(pixel(1, 2), expected(positive, 0.0)) << sign;  // grey 128 is the image's darkest: black
    EXPECT_EQ(pixel(3, 0), expected(negative, 0.0)) << sign;
    EXPECT_EQ(pixel(0, 0), expected(0.0, 1.0)) << sign;  // the white pixel, no attribution
  }
  // all: green for positive, red for negative.
  auto image = DecodeImage(EncodeHeatmapPng(e, input, {Heatmap::kSigned, Sign::kAll, 2.0}).value()).value();
  EXPECT_GT(image.at(margin + 1 * zoom + 5, margin + 2 * zoom + 5, 1),
            image.at(margin + 1 * zoom + 5, margin + 2 * zoom + 5, 0));
  EXPECT_GT(image.at(margin + 3 * zoom + 5, margin + 0 * zoom + 5, 0),
            image.at(margin + 3 * zoom + 5, margin + 0 * zoom + 5, 1));
}

}  // namespace
}  // namespace intgrads
