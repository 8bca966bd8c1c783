// Validation of the original request body: every bad input is a clear
// error that names the field.
#include "common/request.h"

#include <gtest/gtest.h>

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
  EXPECT_EQ(r->method, "gausslegendre");
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
  ExpectError("not json", "not valid JSON");
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
  ExpectError(R"({"img_data": [[[1,2,1e400]]], "target_class": "cat"})", "not valid JSON");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "unicorn"})", "unknown class 'unicorn'");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": 10})", "outside 0..9");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": [3]})", "target_class");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "cat", "n_steps": 0})", "n_steps");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "cat", "n_steps": 100000})", "--max-n-steps");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "cat", "n_steps": 99999999999})", "n_steps");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "cat", "n_steps": "50"})", "n_steps");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "cat", "method": "simpson"})", "unknown method");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "cat", "method": "riemann_left", "n_steps": 1})", "n_steps");
  ExpectError(R"({"img_data": [[[1,2,3]]], "target_class": "cat", "n_steps": NaN})", "not valid JSON");
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

TEST(Request, LongClassNamesAreCutInMessages) {
  auto r = Parse(R"({"img_data": [[[1,2,3]]], "target_class": ")" + std::string(5000, 'x') + "\"}");
  ASSERT_FALSE(r.ok());
  EXPECT_LT(r.status().message().size(), 400U);
}

}  // namespace
}  // namespace intgrads
