// Stands in front of Pistache's HTTP handler (the router's) and mends the
// ways in which Pistache 0.0.5 treats connections:
//
// - Every request's bytes go through a RequestFramer first
//   (gateway/request_framer.h): the head is held until complete and handed
//   on whole (Pistache parsed an incomplete head again from its start with
//   every piece, in time growing with the square of its length); a head over
//   kMaxHeadBytes, a body over the limit (by its Content-Length, a chunk's
//   size, or the bytes received), a head Pistache cannot read (its syntax,
//   framing, content coding, or a header value its own parsers throw on:
//   PistacheFieldError) and a chunked body it cannot read are refused
//   before Pistache sees them. The refusal is the gateway's to write (a
//   callback, so it is the same JSON as every other error); then the
//   connection is closed for writing and the rest of what the client sends
//   on it is read and dropped, so a client still sending its body reads the
//   answer rather than a reset. A request whose client waits for a "100
//   Continue" before sending its body (curl does for bodies over 1 MB) gets
//   one once its head is accepted.
// - The client timeout: a request not received whole within
//   `client_timeout` of its first byte is answered 408 in the same JSON by a
//   ClientTimer thread, and the connection closed. Pistache's own header and
//   body timeouts (a plain-text 408) stay as a backstop past it, and ran on
//   through the wait for an answer (pistache issue #1030): once a request
//   has arrived whole its connection counts as idle, so that the keep-alive
//   timeout applies to it.
// - An answer closes the connection when the request asked so, came with the
//   next request behind it (pipelined: Pistache dropped those bytes), or was
//   refused (AnswerCloses); Pistache answered "Connection: Ext" to a
//   Connection field it could not read, and kept every connection open.
//
//   auto timer = std::make_shared<ClientTimer>(std::chrono::seconds(30));
//   endpoint.setHandler(std::make_shared<RequestGuard>(router.handler(), limit, refuse, timer));
#pragma once

#include <pistache/http.h>
#include <pistache/peer.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gateway/request_framer.h"
#include "gateway/request_head.h"

namespace intgrads {

// Why Pistache's own parsers (its registered headers, Cookie and Set-Cookie),
// run on every header of a request, would throw: it answered with the
// exception's text in plain text, a 500 for most (a Host whose port is not a
// number, a Date, Cache-Control or Cookie it cannot read), a 415 for a
// Content-Type or Accept it cannot read. `status`: the 4xx Pistache gave, else
// 400. Empty when they all read their header.
std::string PistacheFieldError(const RequestHead& head, int* status);

class RequestGuard;
struct GuardedConnection;

// Answers the requests whose client takes longer than the timeout to send
// them, from a thread of its own that looks every 100 ms.
class ClientTimer {
 public:
  explicit ClientTimer(std::chrono::milliseconds timeout);
  ~ClientTimer();
  ClientTimer(const ClientTimer&) = delete;
  ClientTimer& operator=(const ClientTimer&) = delete;
  std::chrono::milliseconds timeout() const { return timeout_; }
  // Stops the thread (before the connections' handlers go away); for good.
  void Stop();

 private:
  friend class RequestGuard;
  void Watch(const std::shared_ptr<GuardedConnection>& connection);
  void Run();

  std::chrono::milliseconds timeout_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::vector<std::weak_ptr<GuardedConnection>> connections_;
  std::thread thread_;
};

class RequestGuard final : public Pistache::Http::Handler, public std::enable_shared_from_this<RequestGuard> {
 public:
  // Writes the refusal of a request (its head as sent, empty when it never
  // arrived whole; the status and what is wrong) and returns the write's
  // promise. The writer's answer says "Connection: Close", and the refusal
  // closes the connection for writing once it is written (HttpApi's answers
  // do).
  using Refusal = std::function<Pistache::Async::Promise<ssize_t>(
      const RequestHead& head, int status, const std::string& message, Pistache::Http::ResponseWriter writer)>;

  RequestGuard(std::shared_ptr<Pistache::Http::Handler> inner, uint64_t max_body_bytes, Refusal refuse,
               std::shared_ptr<ClientTimer> timer);

  // Whether the answer to the request being dispatched on this connection
  // closes it (RequestFramer::AnswerCloses). The answer says "Connection:
  // Close" or "Keep-Alive" accordingly. Called while the request is
  // dispatched or refused, on the thread that does it.
  static std::optional<bool> AnswerCloses(const Pistache::Tcp::Peer& peer);

  std::shared_ptr<Pistache::Tcp::Handler> clone() const override;
  // Requests are parsed and answered by the inner handler; this only forwards.
  void onRequest(const Pistache::Http::Request& request, Pistache::Http::ResponseWriter response) override;

 private:
  friend class ClientTimer;

  void onConnection(const std::shared_ptr<Pistache::Tcp::Peer>& peer) override;
  void onDisconnection(const std::shared_ptr<Pistache::Tcp::Peer>& peer) override;
  void onInput(const char* buffer, size_t len, const std::shared_ptr<Pistache::Tcp::Peer>& peer) override;
  // With the connection's lock held.
  void Refuse(const std::shared_ptr<Pistache::Tcp::Peer>& peer, GuardedConnection& connection, int status,
              const std::string& message);

  std::shared_ptr<Pistache::Http::Handler> inner_;
  uint64_t max_body_bytes_;
  Refusal refuse_;
  std::shared_ptr<ClientTimer> timer_;
  bool inner_has_transport_ = false;
};

}  // namespace intgrads
