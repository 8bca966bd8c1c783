// libFuzzer target: the JSON request parser, the ZeroMQ message decoder and
// the image decoders on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/image.h"
#include "common/protocol.h"
#include "common/request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  intgrads::RequestLimits limits;
  limits.max_side = 256;
  limits.max_pixels = 256 * 256;
  // The fast scanner and the general parser must agree on every body.
  auto fast = intgrads::ParseModelRequest(bytes, intgrads::Cifar10Classes(), limits);
  auto general = intgrads::ParseModelRequestGeneral(bytes, intgrads::Cifar10Classes(), limits);
  if (fast.ok() != general.ok()) std::abort();
  if (fast.ok() ? fast->image.pixels != general->image.pixels || fast->target != general->target ||
                      fast->n_steps != general->n_steps || fast->method != general->method
                : fast.status().message() != general.status().message()) {
    std::abort();
  }
  const size_t cut = size / 2;
  (void)intgrads::DecodeMessage({bytes.substr(0, cut), bytes.substr(cut)});
  (void)intgrads::DecodeMessage({bytes});
  auto image = intgrads::DecodeImage(bytes);
  if (image.ok() && image->width <= 4096 && image->height <= 4096) {
    (void)intgrads::ResizeBilinear(intgrads::ToRgb(*image), 32, 32);
  }
  return 0;
}
