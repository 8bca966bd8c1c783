// Integrated Directional Gradients for regions against values computed by
// hand on a linear model with 2 x 2 inputs, and the hierarchies' shapes.
#include "worker/engine/regions.h"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

namespace intgrads {
namespace {

// f(x) = sum(w * x) over 3 x S x S: every path gradient is w.
class Linear final : public Classifier {
 public:
  explicit Linear(torch::Tensor w) : w_(std::move(w)) {
    info_.classes = {"only"};
    info_.input_size = static_cast<int>(w_.size(2));
  }
  torch::Tensor Forward(const torch::Tensor& x) const override { return (x * w_).sum({1, 2, 3}).unsqueeze(1); }
  void To(const torch::TensorOptions&) override {}

 private:
  torch::Tensor w_;
};

Image Grey(int side) {
  Image image;
  image.width = image.height = side;
  image.channels = 3;
  image.pixels.assign(static_cast<size_t>(side) * side * 3, 128);
  return image;
}

// The example worked by hand below: (x, w).
std::pair<torch::Tensor, torch::Tensor> HandExample() {
  torch::Tensor x = torch::zeros({1, 3, 2, 2}, torch::kFloat64);
  x[0][0][0][0] = 1;
  x[0][0][0][1] = 2;
  x[0][1][1][0] = 2;
  torch::Tensor w = torch::zeros({1, 3, 2, 2}, torch::kFloat64);
  w[0][0][0][0] = 1;
  w[0][0][0][1] = 1;
  w[0][1][1][0] = -1;
  w[0][2].fill_(0.5);
  return {x, w};
}

// x (channel, row, column): channel 0 = [[1, 2], [0, 0]], channel 1 =
// [[0, 0], [2, 0]], channel 2 = 0; w: channel 0 = [[1, 1], [0, 0]],
// channel 1 = [[0, 0], [-1, 0]], channel 2 = 0.5 everywhere; zero baseline.
// By hand (G = w, z = x):
//   values: |IDG({i})| = |w_i|: 1 + 1 + 1 + 4 x 0.5 = 5 in all
//   pixels: (0,0): w.z / |z| = 1/1 = 1; (0,1): 2/2 = 1; (1,0): -2/2 = -1; (1,1): z = 0, so 0
//   image:  (1 + 2 - 2) / sqrt(1 + 4 + 4) = 1/3
//   Z = 5 + 3 + 1/3 = 25/3
//   dividends: image 1/25 = 0.04, each of the first three pixels 3/25 = 0.12
//   pixel values: (0,0): (1 + 1 + 0.5) x 3/25 = 0.30; (0,1): 0.30; (1,0): (1 + 1 + 0.5) x 3/25 = 0.30;
//                 (1,1): 0.5 x 3/25 = 0.06
//   value of the image: 0.04 + 0.9 + 0.06 = 1
TEST(Regions, HandComputedOnATwoByTwoLinearModel) {
  const auto [x, w] = HandExample();
  Linear model(w);
  // (Rules whose weights sum to 1; Captum's riemann_trapezoid weights sum to
  // 1 - 1/n, and IDG, an integral by those weights, scales with them.)
  constexpr double kTol = 1e-6;  // step_sizes are float32, as the original returns them
  for (const Method method : {Method::kGaussLegendre, Method::kRiemannMiddle}) {
    const Attribution a = Attribute(model, x, 0, *MakeSchedule(method, 7), EngineOptions());
    auto regions = ComputeRegions(a, RegionRequest{RegionKind::kQuadtree, 2, 16, 5}, Grey(2));
    ASSERT_TRUE(regions.ok()) << regions.status().message();
    ASSERT_EQ(regions->nodes.size(), 1U);  // the image; its pixels are the level below
    const RegionNode& image = regions->nodes[0];
    EXPECT_NEAR(regions->normalizer, 25.0 / 3.0, kTol) << method;
    EXPECT_NEAR(image.idg, 1.0 / 3.0, kTol);
    EXPECT_NEAR(image.dividend, 0.04, kTol);
    EXPECT_NEAR(image.value, 1.0, kTol);
    const std::vector<double> pixel_idg = {1, 1, -1, 0}, pixel_value = {0.30, 0.30, 0.30, 0.06};
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_NEAR(regions->pixel_idg[i], pixel_idg[i], kTol) << i;
      EXPECT_NEAR(regions->pixel_value[i], pixel_value[i], kTol) << i;
    }
  }
}

// Two paths (baselines 0 and x/2, as averaged baselines make): IDG is the
// mean of the paths' IDGs. On the linear model, path 2 has z = x/2, so each
// pixel's unit direction is path 1's and the IDGs equal path 1's.
TEST(Regions, SeveralPathsAverageTheirIdgs) {
  const auto [x, w] = HandExample();
  Linear model(w);
  const Attribution a = AttributePaths(model, x, {{x, torch::zeros_like(x)}, {x, x / 2}}, 0,
                                       *MakeSchedule(Method::kGaussLegendre, 5), {});
  auto regions = ComputeRegions(a, RegionRequest{RegionKind::kQuadtree, 2, 16, 5}, Grey(2));
  ASSERT_TRUE(regions.ok());
  EXPECT_NEAR(regions->nodes[0].idg, 1.0 / 3.0, 1e-6);
  EXPECT_NEAR(regions->pixel_idg[2], -1.0, 1e-6);
  EXPECT_NEAR(regions->nodes[0].value, 1.0, 1e-12);
}

TEST(Regions, AQuadtreeSplitsUntilMinSideAndValuesAddUp) {
  Linear model(torch::linspace(-1, 1, int64_t{3} * 8 * 8, torch::kFloat64).view({1, 3, 8, 8}));
  const torch::Tensor x = torch::linspace(2, -1, int64_t{3} * 8 * 8, torch::kFloat64).view({1, 3, 8, 8});
  const Attribution a = Attribute(model, x, 0, *MakeSchedule(Method::kGaussLegendre, 4), {});
  auto regions = ComputeRegions(a, RegionRequest{RegionKind::kQuadtree, 2, 16, 5}, Grey(8));
  ASSERT_TRUE(regions.ok());
  ASSERT_EQ(regions->nodes.size(), 1U + 4 + 16);  // 8x8, four 4x4, sixteen 2x2
  EXPECT_EQ(regions->nodes[1].children.size(), 4U);
  EXPECT_EQ(regions->nodes[2].height, 2);
  double total_dividends = 0.0;
  for (const RegionNode& n : regions->nodes) {
    double children = 0.0;
    for (int c : n.children) children += regions->nodes[static_cast<size_t>(c)].value;
    if (n.children.empty()) {  // a 2x2 patch: its pixels' values below it
      for (int y = n.top; y < n.top + n.height; ++y) {
        for (int xx = n.left; xx < n.left + n.width; ++xx) children += regions->pixel_value[y * 8 + xx];
      }
    }
    EXPECT_NEAR(n.value, n.dividend + children, 1e-12);
    total_dividends += n.dividend;
  }
  EXPECT_NEAR(regions->nodes[0].value, 1.0, 1e-12);
  EXPECT_GT(total_dividends, 0.0);
  // An odd side: 5x5 splits into 2 and 3; one-pixel parts are pixels, not nodes.
  Linear odd(torch::ones({1, 3, 5, 5}, torch::kFloat64));
  auto five = ComputeRegions(
      Attribute(odd, torch::ones({1, 3, 5, 5}, torch::kFloat64), 0, *MakeSchedule(Method::kGaussLegendre, 2), {}),
      RegionRequest{RegionKind::kQuadtree, 2, 16, 5}, Grey(5));
  ASSERT_TRUE(five.ok());
  int64_t covered = 0;
  for (int c : five->nodes[0].children) covered += five->nodes[static_cast<size_t>(c)].pixels;
  EXPECT_EQ(covered, 25);
  EXPECT_NEAR(five->nodes[0].value, 1.0, 1e-12);
  // The top regions: the largest dividends, the image excluded.
  const std::vector<int> top = TopRegions(*regions, 3);
  ASSERT_EQ(top.size(), 3U);
  EXPECT_GE(regions->nodes[static_cast<size_t>(top[0])].dividend, regions->nodes[static_cast<size_t>(top[2])].dividend);
  EXPECT_EQ(std::count(top.begin(), top.end(), 0), 0);
  const auto doc = nlohmann::json::parse(RegionsJson(*regions));
  EXPECT_EQ(doc["nodes"].size(), 21U);
  EXPECT_EQ(doc["pixel_value"].size(), 8U);
  EXPECT_EQ(doc["nodes"][1]["box"], nlohmann::json({0, 0, 4, 4}));
}

TEST(Regions, SuperpixelsFollowColourAndAreConnected) {
  // Left half red, right half blue: two colours, so segments never mix them.
  Image image = Grey(12);
  for (int y = 0; y < 12; ++y) {
    for (int x = 0; x < 12; ++x) {
      uint8_t* p = &image.pixels[(static_cast<size_t>(y) * 12 + x) * 3];
      p[0] = x < 6 ? 220 : 10;
      p[1] = 20;
      p[2] = x < 6 ? 10 : 220;
    }
  }
  const std::vector<int> labels = Superpixels(image, 4);
  for (int y = 0; y < 12; ++y) {
    EXPECT_NE(labels[static_cast<size_t>(y) * 12 + 5], labels[static_cast<size_t>(y) * 12 + 6]) << y;
  }
  Linear model(torch::ones({1, 3, 12, 12}, torch::kFloat64));
  const torch::Tensor x = torch::linspace(-1, 1, int64_t{3} * 144, torch::kFloat64).view({1, 3, 12, 12});
  auto regions = ComputeRegions(Attribute(model, x, 0, *MakeSchedule(Method::kGaussLegendre, 3), {}),
                                RegionRequest{RegionKind::kSuperpixels, 2, 4, 5}, image);
  ASSERT_TRUE(regions.ok());
  EXPECT_GE(regions->nodes.size(), 1U + 2);
  int64_t pixels = 0;
  for (int c : regions->nodes[0].children) pixels += regions->nodes[static_cast<size_t>(c)].pixels;
  EXPECT_EQ(pixels, 144);
  EXPECT_NEAR(regions->nodes[0].value, 1.0, 1e-12);
}

TEST(Regions, RequestsAreChecked) {
  EXPECT_TRUE(ValidateRegionRequest({RegionKind::kQuadtree, 2, 16, 5}, Format::kJson).ok());
  EXPECT_TRUE(ValidateRegionRequest({RegionKind::kNone, 2, 16, 5}, Format::kGzip).ok());
  EXPECT_FALSE(ValidateRegionRequest({RegionKind::kQuadtree, 2, 16, 5}, Format::kGzip).ok());
  EXPECT_FALSE(ValidateRegionRequest({RegionKind::kQuadtree, 1, 16, 5}, Format::kJson).ok());
  EXPECT_FALSE(ValidateRegionRequest({RegionKind::kSuperpixels, 2, 0, 5}, Format::kPng).ok());
  EXPECT_FALSE(ValidateRegionRequest({RegionKind::kSuperpixels, 2, 16, 0}, Format::kPng).ok());
}

}  // namespace
}  // namespace intgrads
