// The request of POST /v1/attributions, in any of the shapes a client may
// send it (docs/API.md), read into one form:
//
//   raw image     Content-Type image/png or image/jpeg (or
//                 application/octet-stream), options in the query:
//                 ?target=cat&n_steps=50&format=npz
//   multipart     curl -F image=@cat.jpg -F target=cat; several `image`
//                 parts with one `target` part each, in order (`data`, as
//                 TorchServe calls it, is the same as `image`)
//   JSON          {"image": "<base64 PNG or JPEG>" | "img_data": H x W x 3,
//                  "target": "cat", ...}, or {"inputs": [{"image": ...,
//                  "target": ...}, ...], "n_steps": ...} for several images
//
// A target is a class name, an index, or "predicted" (the model's top class);
// without one an image is explained for its predicted class. One target is
// never applied to several images: each image names its own. Several classes
// for one image: a comma-separated list ("cat,dog") or a JSON array, or
// top_k=K for the K most probable. Query options
// apply to every shape; the body's own fields win over them. Nothing here
// throws: every way a request can be wrong is a Status naming the field.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/image.h"
#include "common/protocol.h"
#include "common/request.h"
#include "common/status.h"

namespace intgrads {

struct AttributionLimits {
  RequestLimits request;
  int max_images = 16;  // images per request
  // Pixels of every image of a request together, decoded or read from
  // img_data, and of its baseline image once for each (uploads counted from
  // their headers, before any is decoded).
  int64_t max_request_pixels = int64_t{16} * 1024 * 1024;
};

// An uploaded PNG or JPEG, read as far as its header until DecodeUploads.
struct EncodedImage {
  std::string bytes;
  ImageHeader header;
  std::string what;  // the image in messages: "image 0 (cat.png)", "baseline_image"
};

struct AttributionInput {
  Image image;                         // decoded, or read from img_data
  std::optional<EncodedImage> upload;  // until DecodeUploads
  // The classes to explain, each a class name, an index, or "predicted"; a
  // text that is no class name may list several, comma-separated
  // (ResolveTargets).
  std::vector<std::string> targets = {"predicted"};
  std::string name;  // the file name or the client's label, for outputs; may be empty
  // The model's normalized input itself, float32 3 x S x S (`image` then
  // has its height and width, no pixels): KServe v2's FP32 input.
  std::string tensor;
};

struct AttributionsRequest {
  std::vector<AttributionInput> inputs;
  int n_steps = 50;
  Method method = Method::kGaussLegendre;
  std::optional<Format> format;  // none: chosen from Accept (NegotiateFormat)
  Heatmap heatmap = Heatmap::kSigned;
  Sign sign = Sign::kNone;             // Captum's look (ValidateHeatmap); kNone: ours
  std::optional<double> outlier_perc;  // with sign (2 when not given)
  std::string model;                   // empty: the default or only model
  int top_k = 0;                       // > 0: explain each image's top_k classes (instead of targets)
  PathRequest paths;      // baseline (baseline_image: a file part or a base64 JSON field), SmoothGrad, tolerance
  RegionRequest regions;  // IDG for regions: regions, region_min_side, segments, top_regions
  std::optional<EncodedImage> baseline_upload;  // paths.baseline_image until DecodeUploads
};

using QueryParams = std::vector<std::pair<std::string, std::string>>;

// The options a request may set, in the query, form fields or JSON members
// (besides the image fields). openapi.json lists exactly these.
const std::vector<std::string>& AttributionParameters();

// The path options among them (baseline ... tolerance), and setting one from
// its text: false when `name` is not one of them.
const std::vector<std::string>& PathParameters();
StatusOr<bool> SetPathOption(const std::string& name, const std::string& value, PathRequest* paths);
// The same for the region options (regions ... top_regions).
const std::vector<std::string>& RegionParameters();
StatusOr<bool> SetRegionOption(const std::string& name, const std::string& value, RegionRequest* regions);

// Reads the request and the headers of its uploaded images, decoding none
// of them: a request over the limits (images, pixels per image, pixels of
// all its images together) is refused before any pixel is decoded.
StatusOr<AttributionsRequest> ReadAttributionsRequest(std::string_view content_type, const QueryParams& query,
                                                      std::string_view body, const AttributionLimits& limits);
// The inputs of a protocol's request (gateway/protocols.h), given apart from
// the options: an encoded PNG or JPEG, or with `side` > 0 the model's
// normalized input, float32 3 x side x side. One target among the options
// applies to every input.
struct GivenInput {
  std::string bytes;
  int side = 0;
};
StatusOr<AttributionsRequest> ReadGivenInputs(const QueryParams& options, std::vector<GivenInput> inputs,
                                              const AttributionLimits& limits);

// The bytes a request's images take, decoded (uploads by their headers:
// ImageHeader::decode_bytes), the baseline image once for each input, as
// each input's job carries it.
uint64_t RequestImageBytes(const AttributionsRequest& request);
// Decodes the uploads into the inputs' images and the baseline image.
Status DecodeUploads(AttributionsRequest* request, const AttributionLimits& limits);
// Both: the request with its images decoded.
StatusOr<AttributionsRequest> ParseAttributionsRequest(std::string_view content_type, const QueryParams& query,
                                                       std::string_view body, const AttributionLimits& limits);

// "predicted" -> kPredictedTarget; a class name -> its index; an integer
// within 0..classes-1 -> itself.
StatusOr<int> ResolveTarget(const std::string& target, const std::vector<std::string>& classes);
// Each of `targets` by ResolveTarget; one that is no class name but holds
// commas is a list ("cat,dog,3"), so that class names with commas (ImageNet's
// "tench, Tinca tinca") still resolve whole.
StatusOr<std::vector<int>> ResolveTargets(const std::vector<std::string>& targets,
                                          const std::vector<std::string>& classes);

// Standard base64 (RFC 4648), padding optional, whitespace ignored; a
// data: URL prefix ("data:image/png;base64,") is skipped.
StatusOr<std::string> DecodeBase64(std::string_view text);
std::string EncodeBase64(std::string_view bytes);

struct FormPart {
  std::string name;
  std::string filename;
  std::string content_type;
  std::string_view data;  // points into the body
};
// multipart/form-data (RFC 7578) with the boundary of `content_type`.
StatusOr<std::vector<FormPart>> ParseMultipart(std::string_view content_type, std::string_view body);

// The answer's encoding: `format` when set, else the first of Accept's media ranges (by q) that names
// one ("*/*" and a missing Accept: gzip). Several results (images, or
// classes of one image) come back as a zip of one file each (JSON: one
// document with a list), which application/zip in Accept also asks for. kNotAcceptable when Accept admits none.
struct Negotiated {
  const PayloadFormat* format = nullptr;
  bool zip = false;  // several files in one zip
};
StatusOr<Negotiated> NegotiateFormat(std::string_view accept, std::optional<Format> format, size_t results);

}  // namespace intgrads
