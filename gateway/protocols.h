// The protocols our users' serving tools speak, as thin translations to and
// from the gateway's own request and replies (no Pistache, no sockets; the
// routes in gateway/protocol_routes.cc call these, tests call them directly):
//
//   KServe v1            POST /v1/models/NAME:explain, :predict
//                        {"instances": [...], "parameters": {...}} ->
//                        {"predictions": [...], "explanations": [...]}
//   Open Inference       GET /v2, /v2/health/{live,ready}, /v2/models/NAME[/ready],
//   Protocol v2          POST /v2/models/NAME/infer: images (BYTES, base64) or the
//   (Triton, KServe v2)  model's input (FP32, N x 3 x S x S) -> logits, probabilities;
//                        the attribution as more outputs (the "attribution" extension)
//   TorchServe           POST|PUT /explanations/NAME, /predictions/NAME (an image
//                        body or a `data` form field), GET /ping
//
// docs/API.md documents each, with the attribution extension of v2.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/attributions.h"
#include "common/protocol.h"
#include "common/status.h"
#include "gateway/gathering.h"

namespace intgrads {

// KServe v1: the body of an :explain or :predict request as a /v1 JSON body
// ({"inputs": [...]} with the parameters beside it). Instances (or inputs)
// are images: a base64 string, {"b64": ...}, {"image_bytes": {"b64": ...}},
// {"image": <base64>|{"b64": ...}, "target": ...}, or H x W x C integers.
StatusOr<std::string> KServeRequestBody(std::string_view body);
// {"predictions": [one list of class probabilities per instance]}, and for
// :explain "explanations": one of our JSON attributions per instance (a list
// of them for an instance explained for several classes).
StatusOr<std::string> KServeAnswer(const Gathering& gathering, bool explain);

// Open Inference Protocol v2.
struct InferRequest {
  nlohmann::json id;                 // echoed when given
  std::vector<GivenInput> inputs;    // the batch: encoded images, or tensors
  bool explain = false;              // parameters.explain, or an attribution output asked for
  QueryParams options;               // the other parameters (target, n_steps, method, baseline, ...)
  std::vector<std::string> outputs;  // the outputs asked for; empty: all that were computed
};
StatusOr<InferRequest> ParseInferRequest(std::string_view body, int input_size);
// The inference response, every output batched over the inputs.
StatusOr<std::string> InferAnswer(const std::string& model, const InferRequest& request, const Gathering& gathering);
// The outputs of an infer response, those of the attribution extension last.
const std::vector<std::string>& InferOutputs();
nlohmann::json ServerMetadata();
nlohmann::json ModelMetadata(const WorkerInfo& info);

// TorchServe: a prediction is the five most probable classes, {name: p};
// an explanation the IG as nested lists, 3 x S x S (Captum's, as its image
// classifier's handler answers). A list of them for several images.
StatusOr<std::string> TorchServeAnswer(const Gathering& gathering, bool explain);

}  // namespace intgrads
