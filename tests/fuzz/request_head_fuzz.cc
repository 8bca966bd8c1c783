// libFuzzer target: the gateway's first look at a request's head
// (gateway/request_head.h), which reads raw bytes off the network.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "gateway/request_head.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const auto head = intgrads::ParseRequestHead(bytes);
  // A head is read exactly when its blank line has arrived.
  if (head.has_value() != (bytes.find("\r\n\r\n") != std::string_view::npos)) std::abort();
  if (head) {
    // It ends with the first blank line.
    if (head->size != bytes.find("\r\n\r\n") + 4) std::abort();
    (void)head->ContentLength();
    (void)head->FramingError();
    if (head->SyntaxError().size() > 300) std::abort();  // what it quotes is cut
    (void)head->Field("authorization");
  }
  return 0;
}
