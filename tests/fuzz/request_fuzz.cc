// libFuzzer target: the JSON request parser, the ZeroMQ message decoder and
// the image decoders on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/image.h"
#include "common/protocol.h"
#include "common/request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  intgrads::RequestLimits limits;
  limits.max_side = 256;
  limits.max_pixels = 256 * 256;
  (void)intgrads::ParseModelRequest(bytes, intgrads::Cifar10Classes(), limits);
  const size_t cut = size / 2;
  (void)intgrads::DecodeMessage({bytes.substr(0, cut), bytes.substr(cut)});
  (void)intgrads::DecodeMessage({bytes});
  auto image = intgrads::DecodeImage(bytes);
  if (image.ok() && image->width <= 4096 && image->height <= 4096) {
    (void)intgrads::ResizeBilinear(intgrads::ToRgb(*image), 32, 32);
  }
  return 0;
}
