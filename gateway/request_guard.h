// Stands in front of Pistache's HTTP handler (the router's) and mends three
// ways in which Pistache 0.0.5 treats connections:
//
// - A request whose body is over the gateway's limit is refused before
//   Pistache buffers it: by its Content-Length as soon as the head has
//   arrived, or, for a body without one (chunked), when the bytes received
//   would overflow Pistache's buffer. Pistache reserved whatever
//   Content-Length said (a huge one was a 500 "std::bad_alloc") and refused
//   an overflowing body with a plain-text 413 of its own. The refusal is the
//   gateway's to write (a callback, so it is the same JSON as every other
//   error); then the connection is closed for writing and the rest of what
//   the client sends on it is read and dropped, so a client still sending
//   its body reads the answer rather than a reset. So is a request whose
//   Content-Length is not a number (Pistache read "-1" as 2^64 - 1 and
//   answered a 500), several that differ, or one beside a Transfer-Encoding.
//   And so is a head Pistache cannot read (RequestHead::SyntaxError): it
//   answered a garbled request line in plain text, and waited for the rest
//   of a field line without a ':' until the client timed out; and a header
//   value its own parsers cannot read, which it answered in plain text, a
//   500 for most (they are run here first). And so is a chunked body
//   Pistache cannot read (ChunkedBody::error: chunk extensions, a size that
//   is not hexadecimal), which it answered in plain text.
//   A request within the limit whose client waits for a "100 Continue"
//   before sending its body (curl does for bodies over 1 MB) gets one.
// - Pistache's header and body timeouts (for clients slow to send) run from
//   a request's first byte until it has arrived whole; then the connection
//   counts as idle, so they no longer apply while its answer is computed
//   (pistache issue #1030) and the keep-alive timeout does. Pistache alone
//   ran them on through the wait for the answer, and left a kept-alive
//   connection's next request to the keep-alive timeout.
// - A request that arrives with the next one behind it (pipelined) marks its
//   connection, so that its answer closes it (AnswerCloses): Pistache dropped
//   the bytes after the request it dispatched and kept the connection open.
//   So does a request whose Connection field does not ask for keep-alive in
//   its first token: Pistache answered "Connection: Ext" and kept it open.
//
//   endpoint.setHandler(std::make_shared<RequestGuard>(router.handler(), limit, refuse));
#pragma once

#include <pistache/http.h>
#include <pistache/peer.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "gateway/request_head.h"

namespace intgrads {

class RequestGuard final : public Pistache::Http::Handler, public std::enable_shared_from_this<RequestGuard> {
 public:
  // Writes the refusal of a request (its head as sent; the status, 400 or
  // 413, and what is wrong) and returns the write's promise. The
  // writer's answer says "Connection: Close", and the refusal closes the
  // connection for writing once it is written (HttpApi's answers do).
  using Refusal = std::function<Pistache::Async::Promise<ssize_t>(
      const RequestHead& head, int status, const std::string& message, Pistache::Http::ResponseWriter writer)>;

  RequestGuard(std::shared_ptr<Pistache::Http::Handler> inner, uint64_t max_body_bytes, Refusal refuse);

  // Whether the answer to the request being dispatched on this connection
  // closes it: when the request was refused here, did not ask to keep it open
  // (RequestHead::KeepsAlive), or came with bytes past its end, the next
  // request, pipelined, which Pistache 0.0.5 drops (RFC 9112, 9.3.2: the
  // client then sends the rest again). The answer says "Connection: Close"
  // or "Keep-Alive" accordingly. Nothing when the head was left to Pistache
  // (over 64 KiB). Called on the thread that reads the connection, while it
  // dispatches.
  static std::optional<bool> AnswerCloses(const Pistache::Tcp::Peer& peer);

  std::shared_ptr<Pistache::Tcp::Handler> clone() const override;
  // Requests are parsed and answered by the inner handler; this only forwards.
  void onRequest(const Pistache::Http::Request& request, Pistache::Http::ResponseWriter response) override;

 private:
  struct Connection;

  void onConnection(const std::shared_ptr<Pistache::Tcp::Peer>& peer) override;
  void onDisconnection(const std::shared_ptr<Pistache::Tcp::Peer>& peer) override;
  void onInput(const char* buffer, size_t len, const std::shared_ptr<Pistache::Tcp::Peer>& peer) override;
  void Refuse(const std::shared_ptr<Pistache::Tcp::Peer>& peer, Connection& connection, int status,
              const std::string& message);

  std::shared_ptr<Pistache::Http::Handler> inner_;
  uint64_t max_body_bytes_;
  Refusal refuse_;
  bool inner_has_transport_ = false;
};

// The 413's message for a body over the limit (its size when known).
std::string BodyTooLarge(std::optional<uint64_t> body_bytes, uint64_t max_body_bytes);

}  // namespace intgrads
