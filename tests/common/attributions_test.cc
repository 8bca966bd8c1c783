// The /v1/attributions request in its shapes, base64, multipart and the
// choice of format, without a server.
#include "common/attributions.h"

#include <gtest/gtest.h>

#include <random>

namespace intgrads {
namespace {

const std::vector<std::string> kClasses = {"airplane", "cat", "dog"};

Image Pattern(int height, int width, int channels) {
  Image image;
  image.height = height;
  image.width = width;
  image.channels = channels;
  for (int i = 0; i < height * width * channels; ++i) image.pixels.push_back(static_cast<uint8_t>(i * 7));
  return image;
}

std::string Png(int height, int width) { return EncodePng(Pattern(height, width, 3)).value(); }

std::string Multipart(const std::vector<std::tuple<std::string, std::string, std::string>>& parts) {
  std::string body;
  for (const auto& [name, filename, data] : parts) {
    body += "--XyZ\r\nContent-Disposition: form-data; name=\"" + name + "\"";
    if (!filename.empty()) body += "; filename=\"" + filename + "\"\r\nContent-Type: image/png";
    body += "\r\n\r\n" + data + "\r\n";
  }
  return body + "--XyZ--\r\n";
}

TEST(Base64, RoundTripsEveryLengthAndRefusesJunk) {
  std::mt19937 random(7);
  for (size_t n = 0; n < 40; ++n) {
    std::string bytes;
    for (size_t i = 0; i < n; ++i) bytes += static_cast<char>(random());
    const std::string encoded = EncodeBase64(bytes);
    EXPECT_EQ(DecodeBase64(encoded).value(), bytes);
    std::string unpadded = encoded;
    while (!unpadded.empty() && unpadded.back() == '=') unpadded.pop_back();
    EXPECT_EQ(DecodeBase64(unpadded).value(), bytes);
  }
  EXPECT_EQ(DecodeBase64("data:image/png;base64,aGk=").value(), "hi");
  EXPECT_EQ(DecodeBase64("aG\nk=").value(), "hi");
  EXPECT_FALSE(DecodeBase64("a*b").ok());
  EXPECT_FALSE(DecodeBase64("aGk=aGk=").ok());
  EXPECT_FALSE(DecodeBase64("aGkxa").ok());
}

TEST(Multipart, ReadsPartsAndRefusesBrokenBodies) {
  const std::string body = Multipart({{"image", "a.png", "\x89PNG\r\n--not-a-boundary"}, {"target", "", "cat"}});
  auto parts = ParseMultipart("multipart/form-data; boundary=XyZ", body);
  ASSERT_TRUE(parts.ok()) << parts.status().message();
  ASSERT_EQ(parts->size(), 2U);
  EXPECT_EQ((*parts)[0].name, "image");
  EXPECT_EQ((*parts)[0].filename, "a.png");
  EXPECT_EQ((*parts)[0].content_type, "image/png");
  EXPECT_EQ((*parts)[0].data, "\x89PNG\r\n--not-a-boundary");
  EXPECT_EQ((*parts)[1].data, "cat");
  EXPECT_TRUE(ParseMultipart("multipart/form-data; boundary=\"XyZ\"", body).ok());
  EXPECT_FALSE(ParseMultipart("multipart/form-data", body).ok());
  EXPECT_FALSE(ParseMultipart("multipart/form-data; boundary=XyZ", body.substr(0, body.size() / 2)).ok());
  EXPECT_FALSE(ParseMultipart("multipart/form-data; boundary=Other", body).ok());
}

TEST(AttributionsRequest, ARawImageWithQueryOptions) {
  auto r =
      ParseAttributionsRequest("image/png", {{"target", "cat"}, {"n_steps", "7"}, {"format", "npz"}}, Png(5, 6), {});
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->inputs.size(), 1U);
  EXPECT_EQ(r->inputs[0].image.width, 6);
  EXPECT_EQ(r->inputs[0].image.pixels, Pattern(5, 6, 3).pixels);
  EXPECT_EQ(r->inputs[0].targets.front(), "cat");
  EXPECT_EQ(r->n_steps, 7);
  EXPECT_EQ(r->format, Format::kNpz);
  // Without a target: the predicted class.
  EXPECT_EQ(ParseAttributionsRequest("image/png", {}, Png(2, 2), {})->inputs[0].targets.front(), "predicted");
}

TEST(AttributionsRequest, MultipartImagesEachWithItsTarget) {
  const std::string two = Multipart({{"image", "a.png", Png(3, 3)},
                                     {"image", "b.png", Png(4, 4)},
                                     {"target", "", "cat"},
                                     {"target", "", "2"},
                                     {"method", "", "riemann_left"}});
  auto r = ParseAttributionsRequest("multipart/form-data; boundary=XyZ", {}, two, {});
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->inputs.size(), 2U);
  EXPECT_EQ(r->inputs[0].targets.front(), "cat");
  EXPECT_EQ(r->inputs[1].targets.front(), "2");
  EXPECT_EQ(r->inputs[1].name, "b.png");
  EXPECT_EQ(r->method, Method::kRiemannLeft);
  // One target is never forced on several images.
  const std::string one_target =
      Multipart({{"image", "a.png", Png(3, 3)}, {"image", "b.png", Png(4, 4)}, {"target", "", "cat"}});
  auto refused = ParseAttributionsRequest("multipart/form-data; boundary=XyZ", {}, one_target, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("one target per image"), std::string::npos);
  // No target: each image's predicted class.
  const std::string none = Multipart({{"image", "a.png", Png(3, 3)}, {"image", "b.png", Png(4, 4)}});
  auto predicted = ParseAttributionsRequest("multipart/form-data; boundary=XyZ", {}, none, {});
  ASSERT_TRUE(predicted.ok());
  EXPECT_EQ(predicted->inputs[1].targets.front(), "predicted");
}

// TorchServe's clients send the image as a `data` field.
TEST(AttributionsRequest, DataIsTheImageAsTorchServeCallsIt) {
  auto r = ParseAttributionsRequest("multipart/form-data; boundary=XyZ", {},
                                    Multipart({{"data", "kitten.png", Png(3, 5)}}), {});
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->inputs.size(), 1U);
  EXPECT_EQ(r->inputs[0].image.width, 5);
}

// A protocol's inputs, given apart from the options: images, or the model's
// input as float32; the options' one target applies to each.
TEST(GivenInputs, ImagesAndTensorsWithTheOptions) {
  const std::string tensor(size_t{3} * 2 * 2 * sizeof(float), '\0');
  auto r = ReadGivenInputs({{"n_steps", "7"}, {"target", "cat"}}, {{Png(3, 3), 0}, {tensor, 2}}, {});
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->inputs.size(), 2U);
  EXPECT_EQ(r->n_steps, 7);
  EXPECT_EQ(r->inputs[0].targets, std::vector<std::string>{"cat"});
  EXPECT_EQ(r->inputs[1].targets, std::vector<std::string>{"cat"});
  EXPECT_TRUE(r->inputs[0].upload.has_value());
  EXPECT_EQ(r->inputs[1].tensor.size(), 48U);
  EXPECT_EQ(r->inputs[1].image.height, 2);
  EXPECT_EQ(RequestImageBytes(*r), 3U * 3 * 3 + 48);
  EXPECT_TRUE(DecodeUploads(&r.value(), {}).ok());
  EXPECT_EQ(r->inputs[0].image.pixels.size(), 27U);
  // Mistakes are named: a tensor of the wrong size, a broken image, an unknown option, too many inputs.
  EXPECT_EQ(ReadGivenInputs({}, {{"abc", 2}}, {}).status().code(), StatusCode::kInvalid);
  EXPECT_NE(ReadGivenInputs({}, {{"junk", 0}}, {}).status().message().find("input 0"), std::string::npos);
  EXPECT_NE(ReadGivenInputs({{"colour", "red"}}, {{Png(3, 3), 0}}, {}).status().message().find("colour"),
            std::string::npos);
  AttributionLimits one;
  one.max_images = 1;
  EXPECT_EQ(ReadGivenInputs({}, {{Png(3, 3), 0}, {Png(3, 3), 0}}, one).status().code(), StatusCode::kTooLarge);
  EXPECT_EQ(ReadGivenInputs({}, {}, {}).status().code(), StatusCode::kInvalid);
}

TEST(AttributionsRequest, SeveralTargetsForOneImage) {
  auto listed = ParseAttributionsRequest("image/png", {{"target", "cat,dog, 3"}}, Png(2, 2), {});
  ASSERT_TRUE(listed.ok()) << listed.status().message();
  EXPECT_EQ(*ResolveTargets(listed->inputs[0].targets, Cifar10Classes()), (std::vector<int>{3, 5, 3}));
  // A class name with commas resolves whole; its parts are no classes.
  const std::vector<std::string> imagenet = {"tench, Tinca tinca", "goldfish, Carassius auratus", "a"};
  EXPECT_EQ(*ResolveTargets({"goldfish, Carassius auratus"}, imagenet), (std::vector<int>{1}));
  EXPECT_EQ(*ResolveTargets({"a,0"}, imagenet), (std::vector<int>{2, 0}));
  auto unknown = ResolveTargets({"cat,wolf"}, Cifar10Classes());
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("unknown class 'wolf'"), std::string::npos);

  auto json_list =
      ParseAttributionsRequest("application/json", {}, R"({"img_data": [[0, 1]], "target": ["ship", 0]})", {});
  ASSERT_TRUE(json_list.ok()) << json_list.status().message();
  EXPECT_EQ(json_list->inputs[0].targets, (std::vector<std::string>{"ship", "0"}));
  EXPECT_FALSE(ParseAttributionsRequest("application/json", {}, R"({"img_data": [[0]], "target": []})", {}).ok());
  EXPECT_FALSE(ParseAttributionsRequest("application/json", {}, R"({"img_data": [[0]], "target": [1.5]})", {}).ok());

  auto top = ParseAttributionsRequest("application/json", {}, R"({"img_data": [[0, 1]], "top_k": 3})", {});
  ASSERT_TRUE(top.ok()) << top.status().message();
  EXPECT_EQ(top->top_k, 3);
  EXPECT_EQ(ParseAttributionsRequest("image/png", {{"top_k", "2"}}, Png(2, 2), {})->top_k, 2);
  EXPECT_FALSE(ParseAttributionsRequest("image/png", {{"top_k", "two"}}, Png(2, 2), {}).ok());
}

TEST(AttributionsRequest, JsonWithBase64ImgDataOrInputs) {
  const std::string b64 = EncodeBase64(Png(4, 5));
  auto single =
      ParseAttributionsRequest("application/json", {}, R"({"image": ")" + b64 + R"(", "target": 1, "n_steps": 9})", {});
  ASSERT_TRUE(single.ok()) << single.status().message();
  EXPECT_EQ(single->inputs[0].image.height, 4);
  EXPECT_EQ(single->inputs[0].targets.front(), "1");
  EXPECT_EQ(single->n_steps, 9);
  auto original = ParseAttributionsRequest("application/json", {},
                                           R"({"img_data": [[[1,2,3],[4,5,6]]], "target_class": "dog"})", {});
  ASSERT_TRUE(original.ok()) << original.status().message();
  EXPECT_EQ(original->inputs[0].image.width, 2);
  EXPECT_EQ(original->inputs[0].targets.front(), "dog");
  auto batch = ParseAttributionsRequest("application/json", {{"format", "json"}},
                                        R"({"inputs": [{"image": ")" + b64 +
                                            R"(", "target": "cat", "name": "x"}, {"img_data": [[0, 255]]}],
                                            "method": "scan"})",
                                        {});
  ASSERT_TRUE(batch.ok()) << batch.status().message();
  ASSERT_EQ(batch->inputs.size(), 2U);
  EXPECT_EQ(batch->inputs[0].name, "x");
  EXPECT_EQ(batch->inputs[1].targets.front(), "predicted");
  EXPECT_EQ(batch->inputs[1].image.channels, 1);
  EXPECT_EQ(batch->method, Method::kScan);
  EXPECT_EQ(batch->format, Format::kJson);
}

TEST(AttributionsRequest, EveryMistakeIsNamed) {
  const AttributionLimits limits;
  auto expect = [&](std::string_view type, const QueryParams& query, const std::string& body, StatusCode code,
                    const std::string& words) {
    auto r = ParseAttributionsRequest(type, query, body, limits);
    ASSERT_FALSE(r.ok()) << body.substr(0, 80);
    EXPECT_EQ(r.status().code(), code) << r.status().message();
    EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().message();
  };
  expect("image/png", {{"colour", "red"}}, Png(2, 2), StatusCode::kInvalid, "unknown parameter 'colour'");
  expect("image/png", {{"n_steps", "ten"}}, Png(2, 2), StatusCode::kInvalid, "n_steps");
  expect("image/png", {{"n_steps", "5000"}}, Png(2, 2), StatusCode::kInvalid, "n_steps");
  expect("image/png", {{"method", "simpson"}}, Png(2, 2), StatusCode::kInvalid, "method");
  expect("image/png", {{"format", "csv"}}, Png(2, 2), StatusCode::kInvalid, "format");
  expect("image/png", {{"heatmap", "rainbow"}}, Png(2, 2), StatusCode::kInvalid, "heatmap");
  expect("image/png", {}, Png(2, 2).substr(0, 40), StatusCode::kInvalid, "PNG");
  expect("image/png", {}, "GIF89a", StatusCode::kInvalid, "PNG and JPEG");
  expect("text/csv", {}, "1,2", StatusCode::kInvalid, "Content-Type");
  expect("application/json", {}, "{", StatusCode::kMalformed, "not valid JSON");
  expect("application/json", {}, R"({"image": 5})", StatusCode::kInvalid, "base64");
  expect("application/json", {}, R"({"image": "@@@"})", StatusCode::kInvalid, "base64");
  expect("application/json", {}, R"({"target": "cat"})", StatusCode::kInvalid, "image: missing");
  expect("application/json", {}, R"({"inputs": []})", StatusCode::kInvalid, "inputs");
  expect("application/json", {}, R"({"inputs": [{"img_data": [[1]], "colour": 1}]})", StatusCode::kInvalid,
         "inputs[0].unknown member 'colour'");
  expect("application/json", {}, std::string(20, '[') + std::string(20, ']'), StatusCode::kInvalid, "nested");
  // An unknown member is named as one, whatever the type of its value.
  for (const char* value : {"1", "2.5", "[1]", "{}", "true", "null", "\"x\""}) {
    expect("application/json", {}, std::string(R"({"img_data": [[1]], "colour": )") + value + "}", StatusCode::kInvalid,
           "unknown parameter 'colour'");
  }
  // The image's size is checked from its header, before decoding.
  expect("image/png", {}, Png(1, 5000), StatusCode::kTooLarge, "--max-image-side");
  std::string many = R"({"inputs": [)";
  for (int i = 0; i < 17; ++i) many += std::string(i ? "," : "") + R"({"img_data": [[1]]})";
  expect("application/json", {}, many + "]}", StatusCode::kTooLarge, "--max-images");
}

TEST(AttributionsRequest, TargetsResolveByNameIndexOrPrediction) {
  EXPECT_EQ(ResolveTarget("cat", kClasses).value(), 1);
  EXPECT_EQ(ResolveTarget("2", kClasses).value(), 2);
  EXPECT_EQ(ResolveTarget("predicted", kClasses).value(), kPredictedTarget);
  EXPECT_FALSE(ResolveTarget("3", kClasses).ok());
  EXPECT_FALSE(ResolveTarget("-1", kClasses).ok());
  EXPECT_FALSE(ResolveTarget("zebra", kClasses).ok());
}

TEST(NegotiateFormat, AcceptAndFormatPickTheEncoding) {
  auto pick = [](std::string_view accept, const std::string& format, size_t images) {
    auto n = NegotiateFormat(accept, format.empty() ? std::nullopt : FromName<Format>(format), images);
    if (!n.ok()) return "error " + std::to_string(static_cast<int>(n.status().code()));
    return std::string(n->format->name) + (n->zip ? "+zip" : "");
  };
  EXPECT_EQ(pick("", "", 1), "gzip");
  EXPECT_EQ(pick("*/*", "", 1), "gzip");
  EXPECT_EQ(pick("application/x-npz", "", 1), "npz");
  EXPECT_EQ(pick("image/*", "", 1), "png");
  EXPECT_EQ(pick("application/json;q=0.5, image/png", "", 1), "png");
  EXPECT_EQ(pick("text/html, application/json;q=0.9", "", 1), "json");
  EXPECT_EQ(pick("application/zip", "", 1), "gzip+zip");
  EXPECT_EQ(pick("", "npz", 3), "npz+zip");
  EXPECT_EQ(pick("", "json", 3), "json");
  EXPECT_EQ(pick("application/x-npz", "", 2), "npz+zip");
  EXPECT_EQ(pick("image/png", "png", 1), "png");
  const std::string not_acceptable = "error " + std::to_string(static_cast<int>(StatusCode::kNotAcceptable));
  EXPECT_EQ(pick("text/csv", "", 1), not_acceptable);
  EXPECT_EQ(pick("image/png", "npz", 1), not_acceptable);
  EXPECT_EQ(pick("application/json;q=0", "", 1), not_acceptable);
}

}  // namespace
}  // namespace intgrads
