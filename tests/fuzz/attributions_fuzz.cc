// libFuzzer target: the /v1/attributions request in all its shapes (the
// first byte picks the Content-Type), its multipart and base64 readers,
// Accept negotiation, and a three-frame request message (a baseline image).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include "common/attributions.h"
#include "common/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const char* const kTypes[] = {
      "image/png", "image/jpeg", "application/json", "multipart/form-data; boundary=b", "application/octet-stream", ""};
  const std::string type = kTypes[data[0] % 6];
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  intgrads::AttributionLimits limits;
  limits.request.max_side = 256;
  limits.request.max_pixels = 256 * 256;
  limits.max_images = 4;
  auto parsed = intgrads::ParseAttributionsRequest(type, {{"n_steps", "4"}}, body, limits);
  if (parsed.ok()) {
    if (parsed->inputs.empty() || parsed->inputs.size() > 4) std::abort();
    for (const auto& input : parsed->inputs) {
      const auto& image = input.image;
      if (image.pixels.size() != static_cast<size_t>(image.height) * image.width * image.channels) std::abort();
      if (image.height > 256 || image.width > 256) std::abort();
    }
  }
  (void)intgrads::ParseMultipart(type, body);
  auto decoded = intgrads::DecodeBase64(body);
  if (decoded.ok() && intgrads::DecodeBase64(intgrads::EncodeBase64(*decoded)).value() != *decoded) std::abort();
  const auto format = (data[0] & 4) != 0 ? std::optional(static_cast<intgrads::Format>(data[0] % 4)) : std::nullopt;
  (void)intgrads::NegotiateFormat(body, format, 1 + data[0] % 3);
  const size_t third = body.size() / 3;
  (void)intgrads::DecodeMessage({body.substr(0, third), body.substr(third, third), body.substr(2 * third)});
  return 0;
}
