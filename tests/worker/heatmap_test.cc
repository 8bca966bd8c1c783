// Captum's picture conventions (worker/formats/heatmap.h) on values worked by hand;
// tests/python/test_api.py holds the colours to matplotlib's own maps.
#include "worker/formats/heatmap.h"

#include <gtest/gtest.h>

namespace intgrads {
namespace {

TEST(Heatmap, CumulativeSumThresholdIsCaptums) {
  // Sorted 1, 2, 3, 4; running sums 1, 3, 6, 10.
  EXPECT_EQ(CumulativeSumThreshold({4, 1, 3, 2}, 50), 3);  // the first sum >= 5
  EXPECT_EQ(CumulativeSumThreshold({4, 1, 3, 2}, 98), 4);  // >= 9.8
  EXPECT_EQ(CumulativeSumThreshold({4, 1, 3, 2}, 30), 2);  // >= 3
  EXPECT_EQ(CumulativeSumThreshold({4, 1, 3, 2}, 0), 1);
  EXPECT_EQ(CumulativeSumThreshold({}, 98), 0);
}

TEST(Heatmap, EachSignKeepsItsPartAndScales) {
  const std::vector<double> v = {-4, 1, 2, 3};
  double scale = 0;
  EXPECT_EQ(NormalizeBySign(v, Sign::kAll, 2, &scale), (std::vector<double>{-1, 0.25, 0.5, 0.75}));
  EXPECT_EQ(scale, 4);
  const std::vector<double> positive = NormalizeBySign(v, Sign::kPositive, 2, &scale);  // 0, 1, 2, 3: sums to 6
  EXPECT_EQ(scale, 3);
  EXPECT_DOUBLE_EQ(positive[1], 1.0 / 3);
  EXPECT_EQ(positive[0], 0);
  EXPECT_EQ(NormalizeBySign(v, Sign::kNegative, 2, &scale), (std::vector<double>{1, 0, 0, 0}));
  EXPECT_EQ(scale, -4);  // Captum divides the negative part by a negative threshold
  EXPECT_EQ(NormalizeBySign(v, Sign::kAbsoluteValue, 2, &scale), (std::vector<double>{1, 0.25, 0.5, 0.75}));
  // 50%: the scale is the value where half the mass is reached; past it, clipped.
  EXPECT_EQ(NormalizeBySign(v, Sign::kAbsoluteValue, 50, &scale), (std::vector<double>{1, 1.0 / 3, 2.0 / 3, 1}));
  // Nothing of a sign: nothing coloured, no division by zero.
  EXPECT_EQ(NormalizeBySign({1, 2}, Sign::kNegative, 2, &scale), (std::vector<double>{0, 0}));
}

TEST(Heatmap, ColourMapsAreCaptumsChoices) {
  auto near = [](const Rgb& a, const Rgb& b) {
    for (int c = 0; c < 3; ++c) {
      if (std::abs(a[c] - b[c]) > 1e-9) return false;
    }
    return true;
  };
  EXPECT_TRUE(near(CaptumColour(Sign::kAll, 0.0), {1, 0, 0}));                        // red
  EXPECT_TRUE(near(CaptumColour(Sign::kAll, 1.0), {0, 128.0 / 255, 0}));              // matplotlib's "green"
  EXPECT_TRUE(near(CaptumColour(Sign::kAll, 0.499), {1, 254.0 / 255, 254.0 / 255}));  // entry 127 of 256: nearly white
  EXPECT_TRUE(near(CaptumColour(Sign::kPositive, 1.0), {0, 0x44 / 255.0, 0x1B / 255.0}));       // Greens' darkest
  EXPECT_TRUE(near(CaptumColour(Sign::kNegative, 1.0), {0x67 / 255.0, 0, 0x0D / 255.0}));       // Reds'
  EXPECT_TRUE(near(CaptumColour(Sign::kAbsoluteValue, 0.0), {0xF7 / 255.0, 0xFB / 255.0, 1}));  // Blues' lightest
  EXPECT_DOUBLE_EQ(ColourMapPosition(Sign::kAll, -1), 0);
  EXPECT_DOUBLE_EQ(ColourMapPosition(Sign::kAll, 0), 0.5);
  EXPECT_DOUBLE_EQ(ColourMapPosition(Sign::kPositive, 0.25), 0.25);
}

TEST(Heatmap, GreyIsTheChannelMeanFromDarkestToLightest) {
  const std::vector<double> grey = GreyUnder({10, 20, 30, 110, 120, 130, 60, 70, 80});
  ASSERT_EQ(grey.size(), 3U);
  EXPECT_EQ(grey[0], 0);
  EXPECT_EQ(grey[1], 1);
  EXPECT_DOUBLE_EQ(grey[2], 128.0 / 255);  // halfway: entry floor(0.5 x 256)
  EXPECT_EQ(GreyUnder({5, 5, 5, 5, 5, 5}), (std::vector<double>{0, 0}));
}

}  // namespace
}  // namespace intgrads
