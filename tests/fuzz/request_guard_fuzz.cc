// libFuzzer target: raw bytes off a connection, through the gateway's
// RequestFramer (gateway/request_framer.h) in pieces the input chooses, with
// Pistache's header parsers as its field check, to a parsed request: the
// original's JSON (/model/) or /v1/attributions in any shape, read to its
// images' headers, budgeted, and decoded.
//
// Input: a byte of piece size, then the bytes as a client sends them.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/attributions.h"
#include "common/request.h"
#include "gateway/request_framer.h"
#include "gateway/request_guard.h"
#include "gateway/routes.h"

namespace {

using intgrads::RequestFramer;

void ParseBody(const intgrads::RequestHead& head, const std::string& body) {
  const std::string route = intgrads::RouteOf(head.method, head.target);
  intgrads::RequestLimits limits;
  limits.max_side = 256;
  limits.max_pixels = 256 * 256;
  if (route == "/model/" || route == "/models/{name}/model") {
    auto parsed = intgrads::ParseModelRequest(body, intgrads::Cifar10Classes(), limits);
    if (parsed.ok() && parsed->image.pixels.size() !=
                           static_cast<size_t>(parsed->image.height) * parsed->image.width * parsed->image.channels) {
      std::abort();
    }
  } else if (route == "/v1/attributions" || route == "/v1/models/{name}/attributions") {
    const intgrads::AttributionLimits attribution_limits{limits, 4, 256 * 256};
    auto parsed =
        intgrads::ReadAttributionsRequest(head.Field("content-type").value_or(""), {}, body, attribution_limits);
    if (!parsed.ok()) return;
    // What the gateway reserves before decoding bounds what decoding makes.
    const uint64_t reserved = intgrads::RequestImageBytes(*parsed);
    if (intgrads::DecodeUploads(&parsed.value(), attribution_limits).ok()) {
      uint64_t decoded = 0;
      for (const auto& input : parsed->inputs) {
        if (input.image.height > 256 || input.image.width > 256) std::abort();
        decoded += input.image.pixels.size() + parsed->paths.baseline_image.pixels.size();
      }
      if (decoded > reserved) std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t piece = 1 + data[0] % 64;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  RequestFramer::Limits limits;
  limits.max_body_bytes = 4096;
  limits.max_head_bytes = 1024;
  limits.check_fields = intgrads::PistacheFieldError;
  RequestFramer framer(limits);
  std::string forwarded;
  bool refused = false;
  for (size_t at = 0; at < bytes.size(); at += piece) {
    const RequestFramer::Step step = framer.Feed(bytes.substr(at, piece));
    if (refused && step.verdict != RequestFramer::Verdict::kDrop) std::abort();  // a refusal is final
    if (step.verdict == RequestFramer::Verdict::kRefuse) {
      refused = true;
      if (step.status < 400 || step.status > 431 || step.message.empty() || step.message.size() > 400) std::abort();
    }
    if (step.verdict == RequestFramer::Verdict::kForward) {
      if (!framer.head()) std::abort();  // nothing reaches the parser before a whole head
      forwarded.append(step.forward);
    }
  }
  if (forwarded.size() > limits.max_head_bytes + limits.max_body_bytes) std::abort();
  const auto& head = framer.head();
  if (!head || refused) return 0;
  if (forwarded.compare(0, head->size, bytes.substr(0, head->size)) != 0) std::abort();  // the head, as sent
  // The body as Pistache would read it: by its length, or de-chunked.
  std::string body;
  const std::string_view rest = std::string_view(forwarded).substr(head->size);
  if (head->Field("transfer-encoding")) {
    intgrads::ChunkedBody chunked(limits.max_body_bytes);
    chunked.Feed(rest, &body);
    if (!chunked.ended()) return 0;
    if (body.size() > limits.max_body_bytes) std::abort();
  } else {
    const uint64_t length = head->ContentLength().value_or(0);
    if (length > limits.max_body_bytes) std::abort();  // refused from the head
    if (rest.size() < length) return 0;
    body = std::string(rest.substr(0, length));
  }
  ParseBody(*head, body);
  framer.Dispatched();
  return 0;
}
