// Validation of the original request body: every bad input is a clear
// error that names the field.
#include "common/request.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace intgrads {
namespace {

StatusOr<AttributionRequest> Parse(const std::string& body) {
  return ParseModelRequest(body, Cifar10Classes(), RequestLimits{});
}

void ExpectError(const std::string& body, const std::string& mention, StatusCode code = StatusCode::kInvalid) {
  auto r = Parse(body);
  ASSERT_FALSE(r.ok()) << body;
  EXPECT_EQ(r.status().code(), code) << body;
  EXPECT_NE(r.status().message().find(mention), std::string::npos)
      << "'" << r.status().message() << "' should mention '" << mention << "'";
}

TEST(Request, ParsesTheOriginalBody) {
  auto r = Parse(R"({"img_data": [[[1,2,3],[4,5,6]],[[7,8,9],[10,11,255]]], "target_class": "cat"})");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->image.height, 2);
  EXPECT_EQ(r->image.width, 2);
  EXPECT_EQ(r->image.channels, 3);
  EXPECT_EQ(r->image.pixels.back(), 255);
  EXPECT_EQ(r->target, 3);
  EXPECT_EQ(r->n_steps, 50);
  EXPECT_EQ(r->method, Method::kGaussLegendre);
}

TEST(Request, AcceptsOptionsGreyRgbaAndIndices) {
  auto r = Parse(R"({"img_data": [[1,2],[3,4]], "target_class": 9, "n_steps": 7, "method": "riemann_middle"})");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->image.channels, 1);
  EXPECT_EQ(r->target, 9);
  EXPECT_EQ(r->n_steps, 7);
  auto rgba = Parse(R"({"img_data": [[[1,2,3,4]]], "target_class": "truck"})");
  ASSERT_TRUE(rgba.ok());
  EXPECT_EQ(rgba->image.channels, 4);
}

TEST(Request, RefusesBadBodies) {
  ExpectError("not json", "not valid JSON", StatusCode::kMalformed);  // a 400, as the original answered
  ExpectError("[1,2]", "expected a JSON object");
  ExpectError(R"({"target_class": "cat"})", "img_data: missing");
  ExpectError(R"({"img_data": [[[1,2,3]]]})", "target_class: missing");
  ExpectError(R"({"img_data": [], "target_class": "cat"})", "empty");
  ExpectError(R"({"img_data": [[]], "target_class": "cat"})", "empty");
  ExpectError(R"({"img_data": "abc", "target_class": "cat"})", "img_data");
  ExpectError(R"({"img_data": [[[1,2,3]],[[1,2,3],[4,5,6]]], "target_class": "cat"})", "ragged");
  ExpectError(R"({"img_data": [[[1,2,3],[4,5]]], "target_class": "cat"})", "pixel [0][1]");
  ExpectError(R"({"img_data": [[[1,2]]], "target_class": "cat"})", "3 (RGB) or 4");
  ExpectError(R"({"img_data": [[[1,2,256]]], "target_class": "cat"})", "outside 0..255");
  ExpectError(R"({"img_data": [[[1,2,-1]]], "target_class": "cat"})", "outside 0..255");
  ExpectError(R"({"img_data": [[[1,2,3.5]]], "target_class": "cat"})", "non-integer");
  ExpectError(R"({"img_data": [[[1,2,"3"]]], "target_class": "cat"})", "integers 0..255");
  ExpectError(R"({"img_data": [[[1,2,1e400]]], "target_class": "cat"})", "not valid JSON", StatusCode::kMalformed);
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "unicorn"})", "unknown class 'unicorn'");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": 10})", "outside 0..9");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": [3]})", "target_class");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "cat", "n_steps": 0})", "n_steps");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "cat", "n_steps": 100000})", "--max-n-steps");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "cat", "n_steps": 99999999999})", "n_steps");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "cat", "n_steps": "50"})", "n_steps");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "cat", "method": "simpson"})", "unknown method");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "cat", "method": "riemann_left", "n_steps": 1})", "n_steps");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "cat", "n_steps": NaN})", "not valid JSON",
              StatusCode::kMalformed);
}

TEST(Request, RefusesDeepNestingAndHugeImages) {
  ExpectError(std::string(100000, '[') + std::string(100000, ']'), "nested");
  RequestLimits small;
  small.max_side = 4;
  std::string row = "[";
  for (int i = 0; i < 5; ++i) row += std::string(i ? "," : "") + "[1,2,3]";
  row += "]";
  auto r = ParseModelRequest(R"({"img_data": [)" + row + R"(], "target_class": "cat"})", Cifar10Classes(), small);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kTooLarge);
  EXPECT_NE(r.status().message().find("--max-image-side"), std::string::npos);
}

TEST(Request, TargetsAreCheckedTogether) {
  RequestLimits limits;
  limits.max_targets = 3;
  auto message = [&](const std::vector<int>& targets, int top_k, Method method = Method::kGaussLegendre) {
    const Status s = ValidateTargets(targets, top_k, 10, method, limits);
    return s.ok() ? std::string("ok") : s.message();
  };
  EXPECT_EQ(message({3}, 0), "ok");
  EXPECT_EQ(message({-1, 3, 9}, 0), "ok");
  EXPECT_EQ(message({}, 3), "ok");
  EXPECT_EQ(message({4}, 0, Method::kScan), "ok");
  EXPECT_EQ(message({}, 1, Method::kScan), "ok");
  EXPECT_EQ(message({1, 2}, 0, Method::kScan),
            "method: scan places its points for one target; ask for one, or use gausslegendre");
  EXPECT_EQ(message({10}, 0), "target_class: index 10 is outside 0..9");
  EXPECT_EQ(message({2, 5, 2}, 0), "target: class 2 appears twice");
  EXPECT_EQ(message({1, 2, 3, 4}, 0), "target: 4 classes is over the limit of 3 (raise with --max-targets)");
  EXPECT_EQ(message({}, 4), "top_k: 4 is over the limit of 3 (raise with --max-targets)");
  EXPECT_EQ(message({1}, 2), "top_k: give either top_k or a list of targets, not both");
  EXPECT_EQ(message({}, -1), "top_k: must be 1 or more (0: off)");
  EXPECT_EQ(ValidateTargets({1, 2, 3, 4}, 0, 10, Method::kGaussLegendre, limits).code(), StatusCode::kTooLarge);
}

TEST(Request, LongClassNamesAreCutInMessages) {
  auto r = Parse(R"({"img_data": [[[1,2,3]]], "target_class": ")" + std::string(5000, 'x') + "\"}");
  ASSERT_FALSE(r.ok());
  EXPECT_LT(r.status().message().size(), 400U);
}

// The fast scanner and the general parser give the same answer, request or
// error, on bodies as clients write them and on mutated ones.
void ExpectSameAnswer(const std::string& body, const RequestLimits& limits) {
  auto fast = ParseModelRequest(body, Cifar10Classes(), limits);
  auto general = ParseModelRequestGeneral(body, Cifar10Classes(), limits);
  ASSERT_EQ(fast.ok(), general.ok()) << body << "\n" << (fast.ok() ? general : fast).status().message();
  if (!fast.ok()) {
    EXPECT_EQ(fast.status().code(), general.status().code()) << body;
    EXPECT_EQ(fast.status().message(), general.status().message()) << body;
    return;
  }
  EXPECT_EQ(fast->image.height, general->image.height) << body;
  EXPECT_EQ(fast->image.width, general->image.width) << body;
  EXPECT_EQ(fast->image.channels, general->image.channels) << body;
  EXPECT_EQ(fast->image.pixels, general->image.pixels) << body;
  EXPECT_EQ(fast->target, general->target) << body;
  EXPECT_EQ(fast->n_steps, general->n_steps) << body;
  EXPECT_EQ(fast->method, general->method) << body;
}

TEST(Request, FastScannerAgreesWithTheGeneralParser) {
  std::mt19937 rng(7);
  auto pick = [&rng](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const std::vector<std::string> spaces = {"", "", " ", "\n  ", "\t", "\r\n"};
  const std::vector<std::string> extras = {
      R"("n_steps": 7)",        R"("n_steps": null)",   R"("method": "riemann_middle")",
      R"("method": "scan")",    R"("note": "a, b: c")", R"("flag": true)",
      R"("flag": false)",       R"("n_steps": -3)",     R"("n_steps": 1.5)",
      R"("n_steps": "9")",      R"("n_steps": 0012)",   R"("meta": {"a": 1})",
      R"("name": "caf\u00e9")", R"("name": "café")",    R"("n_steps": 12345678901234567890)",
      R"("target_class": 1)"};
  const std::vector<std::string> targets = {R"("cat")", "3", "9", "10", "-1", R"("unicorn")", "[3]", "null"};
  const std::vector<std::string> bad_values = {"256", "-1", "3.5", "1e2", "07", R"("3")", "", "1 2", "null", "[1]"};
  RequestLimits limits;
  limits.max_side = 5;
  limits.max_pixels = 20;
  for (int round = 0; round < 3000; ++round) {
    const int height = 1 + pick(6), width = 1 + pick(6), channels = std::vector<int>{1, 3, 4}[pick(3)];
    auto space = [&] { return spaces[static_cast<size_t>(pick(static_cast<int>(spaces.size())))]; };
    std::string image = "[" + space();
    for (int y = 0; y < height; ++y) {
      image += (y ? "," + space() : "") + "[" + space();
      for (int x = 0; x < width; ++x) {
        image += x ? "," + space() : "";
        if (channels == 1) {
          image += std::to_string(pick(256));
          continue;
        }
        image += "[";
        for (int c = 0; c < channels; ++c) image += (c ? "," + space() : "") + std::to_string(pick(256));
        image += space() + "]";
      }
      image += space() + "]";
    }
    image += space() + "]";
    if (pick(3) == 0) {  // one value made wrong, or the shape broken
      const size_t at = image.find_first_of("0123456789", static_cast<size_t>(pick(static_cast<int>(image.size()))));
      if (at != std::string::npos) {
        const size_t stop = image.find_first_not_of("0123456789", at);
        image.replace(at, stop - at, bad_values[static_cast<size_t>(pick(static_cast<int>(bad_values.size())))]);
      }
    }
    std::vector<std::string> members = {
        R"("img_data":)" + space() + image,
        R"("target_class": )" + targets[static_cast<size_t>(pick(static_cast<int>(targets.size())))]};
    for (int e = pick(3); e > 0; --e)
      members.push_back(extras[static_cast<size_t>(pick(static_cast<int>(extras.size())))]);
    std::shuffle(members.begin(), members.end(), rng);
    std::string body = space() + "{" + space();
    for (size_t m = 0; m < members.size(); ++m) body += (m ? "," + space() : "") + members[m] + space();
    body += "}" + space();
    if (pick(20) == 0) body += "x";
    if (pick(20) == 0) body.resize(static_cast<size_t>(pick(static_cast<int>(body.size()))));
    ExpectSameAnswer(body, limits);
    if (HasFailure()) return;
  }
}

}  // namespace
}  // namespace intgrads
