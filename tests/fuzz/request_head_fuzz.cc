// libFuzzer target: the gateway's first look at a request's head and at a
// chunked body (gateway/request_head.h), which read raw bytes off the network.
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
    (void)head->KeepsAlive();
  }
  // The bytes as a chunked body, whole and in two pieces cut by the first
  // byte: the same end (or error) either way, and an error stops the reading.
  intgrads::ChunkedBody whole;
  const size_t used = whole.Feed(bytes);
  if (used > size || (whole.ended() && !whole.error().empty())) std::abort();
  if (!whole.ended() && whole.error().empty() && used != size) std::abort();
  const size_t cut = size == 0 ? 0 : data[0] % (size + 1);
  intgrads::ChunkedBody pieces;
  size_t pieces_used = pieces.Feed(bytes.substr(0, cut));
  if (!pieces.ended() && pieces.error().empty()) pieces_used += pieces.Feed(bytes.substr(cut));
  if (pieces.ended() != whole.ended() || pieces.error() != whole.error()) std::abort();
  if (whole.ended() && pieces_used != used) std::abort();
  return 0;
}
