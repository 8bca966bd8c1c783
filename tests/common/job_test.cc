#include "common/job.h"

#include <gtest/gtest.h>

namespace intgrads {
namespace {

AttributionInput Pixels(int height, int width) {
  AttributionInput input;
  input.image.height = height;
  input.image.width = width;
  input.image.channels = 3;
  input.image.pixels.assign(static_cast<size_t>(height) * width * 3, 7);
  return input;
}

// Every route's request becomes its job the same way: one class is the
// original's request, several (or top_k) one reply for all, predict none.
TEST(Job, MadeFromAnyRoutesRequest) {
  AttributionsRequest options;
  options.n_steps = 12;
  options.method = Method::kRiemannMiddle;
  options.sign = Sign::kPositive;
  options.paths.baseline = Baseline::kBlur;
  options.regions.kind = RegionKind::kQuadtree;
  AttributionInput input = Pixels(2, 3);
  JobRequest one = MakeJobRequest(options, {4}, Format::kPng, false, &input);
  EXPECT_EQ(one.target, 4);
  EXPECT_TRUE(one.targets.empty());
  EXPECT_EQ(one.n_steps, 12);
  EXPECT_EQ(one.method, Method::kRiemannMiddle);
  EXPECT_EQ(one.format, Format::kPng);
  EXPECT_EQ(one.sign, Sign::kPositive);
  EXPECT_DOUBLE_EQ(one.outlier_perc, 2.0);  // Captum's default when not given
  EXPECT_EQ(one.paths.baseline, Baseline::kBlur);
  EXPECT_EQ(one.regions.kind, RegionKind::kQuadtree);
  EXPECT_EQ((std::vector<int>{one.image.height, one.image.width, one.image.channels}), (std::vector<int>{2, 3, 3}));
  EXPECT_EQ(one.image.pixels, std::vector<uint8_t>(18, 7));
  EXPECT_TRUE(one.tensor.empty());
  EXPECT_TRUE(input.image.pixels.empty());  // moved, not copied
  input = Pixels(2, 3);

  JobRequest several = MakeJobRequest(options, {4, 1}, Format::kJson, false, &input);
  EXPECT_EQ(several.targets, (std::vector<int>{4, 1}));
  options.top_k = 3;
  JobRequest top = MakeJobRequest(options, {}, Format::kJson, false, &input);
  EXPECT_EQ(top.top_k, 3);

  AttributionInput tensor;
  tensor.image.height = tensor.image.width = 1;
  tensor.tensor = std::string(12, '\0');
  JobRequest predicted = MakeJobRequest(options, {}, Format::kJson, true, &tensor);
  EXPECT_TRUE(predicted.predict);
  EXPECT_EQ(predicted.target, kPredictedTarget);
  EXPECT_EQ(predicted.tensor.size(), 12U);
  EXPECT_EQ(predicted.image.height, 1);
  EXPECT_TRUE(tensor.tensor.empty());  // moved
}

// One validation for both sides: each field's refusal names it.
TEST(Job, ValidatedOnceForGatewayAndWorker) {
  const RequestLimits limits;
  AttributionsRequest options;
  AttributionInput input = Pixels(1, 1);
  const JobRequest good = MakeJobRequest(options, {1}, Format::kGzip, false, &input);
  EXPECT_TRUE(ValidateJob(good, 10, limits).ok());
  auto refused = [&](auto change, const std::string& words) {
    JobRequest job = good;
    change(job);
    const Status status = ValidateJob(job, 10, limits);
    EXPECT_FALSE(status.ok()) << words;
    EXPECT_NE(status.message().find(words), std::string::npos) << status.message();
  };
  refused([](JobRequest& j) { j.n_steps = 0; }, "n_steps");
  refused([](JobRequest& j) { j.n_steps = 1, j.method = Method::kRiemannLeft; }, "riemann_left");
  refused([](JobRequest& j) { j.paths.baseline = Baseline::kImage; }, "baseline_image");  // none sent
  refused([](JobRequest& j) { j.heatmap = Heatmap::kAbsolute, j.sign = Sign::kAll; }, "heatmap");
  refused([](JobRequest& j) { j.paths.tolerance = 0.1, j.method = Method::kRiemannMiddle; }, "tolerance");
  refused([](JobRequest& j) { j.regions.kind = RegionKind::kQuadtree; }, "regions");  // gzip carries no regions
  refused([](JobRequest& j) { j.target = 10; }, "target");
  refused(
      [](JobRequest& j) {
        j.method = Method::kScan;
        j.targets = {1, 2};
      },
      "scan");
  refused([&](JobRequest& j) { j.top_k = limits.max_targets + 1; }, "top_k");
  JobRequest predict = good;
  predict.predict = true;
  predict.format = Format::kPng;  // a prediction's answer is always JSON
  predict.n_steps = 0;
  EXPECT_TRUE(ValidateJob(predict, 10, limits).ok());
}

// Text becomes a word at the edge alone: each name parses to its value and
// back, and anything else is refused naming the field and the names known.
TEST(Vocabulary, NamesRoundTripAndStrangersAreRefused) {
  auto round_trip = [](auto values) {
    for (const auto value : values) {
      using E = std::remove_const_t<decltype(value)>;
      const auto parsed = Parse<E>(NameOf(value));
      ASSERT_TRUE(parsed.ok()) << NameOf(value);
      EXPECT_EQ(*parsed, value);
    }
  };
  round_trip(ValuesOf<Method>());
  round_trip(ValuesOf<Format>());
  round_trip(ValuesOf<Baseline>());
  round_trip(ValuesOf<Heatmap>());
  round_trip(ValuesOf<Sign>());
  round_trip(ValuesOf<RegionKind>());
  auto refused = [](const Status& status, const std::string& words) {
    EXPECT_EQ(status.code(), StatusCode::kInvalid);
    EXPECT_NE(status.message().find(words), std::string::npos) << status.message();
  };
  refused(Parse<Method>("simpson").status(),
          "method: unknown method 'simpson'; expected one of gausslegendre, riemann_left, riemann_right, "
          "riemann_middle, riemann_trapezoid, scan");
  refused(Parse<Format>("bmp").status(), "format: unknown format 'bmp'; expected one of gzip, npz, json, png");
  refused(Parse<Baseline>("grey").status(), "baseline: unknown baseline 'grey'");
  refused(Parse<Heatmap>("SIGNED").status(), "heatmap: unknown heatmap 'SIGNED'; expected one of signed, absolute");
  refused(Parse<Sign>("sideways").status(), "expected one of all, positive, negative, absolute_value");
  refused(Parse<RegionKind>("hexagons").status(), "regions: unknown regions 'hexagons'");
  refused(Parse<Method>(std::string(300, 'x')).status(), std::string(64, 'x') + "...'");
  // The registry of formats is in Format's order, each with its name.
  for (const Format format : ValuesOf<Format>()) {
    EXPECT_EQ(FormatEntry(format).format, format);
    EXPECT_EQ(FormatEntry(format).name, NameOf(format));
  }
  EXPECT_FALSE(FormatEntry(Format::kJson).zips);  // several JSON answers are one document
}

}  // namespace
}  // namespace intgrads
