#include "common/job.h"

#include <gtest/gtest.h>

namespace intgrads {
namespace {

AttributionInput Pixels(int height, int width) {
  AttributionInput input;
  input.image.height = height;
  input.image.width = width;
  input.image.channels = 3;
  input.image.pixels.assign(static_cast<size_t>(height * width * 3), 7);
  return input;
}

// Every route's request becomes its job the same way: one class is the
// original's request, several (or top_k) one reply for all, predict none.
TEST(Job, MadeFromAnyRoutesRequest) {
  AttributionsRequest options;
  options.n_steps = 12;
  options.method = "riemann_middle";
  options.sign = "positive";
  options.paths.baseline = "blur";
  options.regions.kind = "quadtree";
  AttributionInput input = Pixels(2, 3);
  JobRequest one = MakeJobRequest(options, {4}, "png", false, &input);
  EXPECT_EQ(one.target, 4);
  EXPECT_TRUE(one.targets.empty());
  EXPECT_EQ(one.n_steps, 12);
  EXPECT_EQ(one.method, "riemann_middle");
  EXPECT_EQ(one.format, "png");
  EXPECT_EQ(one.sign, "positive");
  EXPECT_DOUBLE_EQ(one.outlier_perc, 2.0);  // Captum's default when not given
  EXPECT_EQ(one.paths.baseline, "blur");
  EXPECT_EQ(one.regions.kind, "quadtree");
  EXPECT_EQ((std::vector<int>{one.height, one.width, one.channels}), (std::vector<int>{2, 3, 3}));
  EXPECT_EQ(one.pixels, std::string(18, '\7'));
  EXPECT_EQ(one.input, "image");

  JobRequest several = MakeJobRequest(options, {4, 1}, "json", false, &input);
  EXPECT_EQ(several.targets, (std::vector<int>{4, 1}));
  options.top_k = 3;
  JobRequest top = MakeJobRequest(options, {}, "json", false, &input);
  EXPECT_EQ(top.top_k, 3);

  AttributionInput tensor;
  tensor.image.height = tensor.image.width = 1;
  tensor.tensor = std::string(12, '\0');
  JobRequest predicted = MakeJobRequest(options, {}, "json", true, &tensor);
  EXPECT_TRUE(predicted.predict);
  EXPECT_EQ(predicted.target, kPredictedTarget);
  EXPECT_EQ(predicted.input, "tensor");
  EXPECT_EQ(predicted.pixels.size(), 12U);
  EXPECT_TRUE(tensor.tensor.empty());  // moved
}

// One validation for both sides: each field's refusal names it.
TEST(Job, ValidatedOnceForGatewayAndWorker) {
  const RequestLimits limits;
  AttributionsRequest options;
  AttributionInput input = Pixels(1, 1);
  const JobRequest good = MakeJobRequest(options, {1}, "gzip", false, &input);
  EXPECT_TRUE(ValidateJob(good, 10, limits).ok());
  auto refused = [&](auto change, const std::string& words) {
    JobRequest job = good;
    change(job);
    const Status status = ValidateJob(job, 10, limits);
    EXPECT_FALSE(status.ok()) << words;
    EXPECT_NE(status.message().find(words), std::string::npos) << status.message();
  };
  refused([](JobRequest& j) { j.method = "simpson"; }, "method");
  refused([](JobRequest& j) { j.n_steps = 0; }, "n_steps");
  refused([](JobRequest& j) { j.format = "bmp"; }, "format");
  refused([](JobRequest& j) { j.sign = "sideways"; }, "sign");
  refused([](JobRequest& j) { j.paths.baseline = "grey"; }, "baseline");
  refused([](JobRequest& j) { j.regions.kind = "quadtree"; }, "regions");  // gzip carries no regions
  refused([](JobRequest& j) { j.target = 10; }, "target");
  refused(
      [](JobRequest& j) {
        j.method = "scan";
        j.targets = {1, 2};
      },
      "scan");
  refused([&](JobRequest& j) { j.top_k = limits.max_targets + 1; }, "top_k");
  JobRequest predict = good;
  predict.predict = true;
  predict.format = "not a format";  // a prediction's answer is always JSON
  EXPECT_TRUE(ValidateJob(predict, 10, limits).ok());
}

}  // namespace
}  // namespace intgrads
