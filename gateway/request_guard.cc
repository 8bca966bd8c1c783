#include "gateway/request_guard.h"

#include <pistache/cookie.h>
#include <pistache/http_headers.h>
#include <pistache/transport.h>

#include <algorithm>
#include <limits>
#include <string>
#include <utility>

#include "common/request.h"

namespace intgrads {

namespace {

constexpr const char* kConnectionData = "intgrads.request_guard";
// A head longer than this is left to Pistache (it refuses it with its buffer).
constexpr size_t kMaxHeadBytes = size_t{64} * 1024;

// What Pistache's own parsers, run on every header of a request that has
// one (its registered headers, Cookie and Set-Cookie), would throw on: it
// answered with the exception's text in plain text, a 500 for most (a Host
// whose port is not a number, a Date, Cache-Control or Cookie it cannot
// read), a 415 for a Content-Type or Accept it cannot read. The same parsers
// run here first, for the gateway's JSON: the status a 4xx Pistache gave,
// else 400. Empty when they all read their header.
std::string HeaderValueError(const RequestHead& head, int* status) {
  auto& registry = Pistache::Http::Header::Registry::instance();
  for (const auto& [name, value] : head.fields) {
    try {
      if (Pistache::Http::Header::LowercaseEqualStatic(name, "cookie")) {
        Pistache::Http::CookieJar().addFromRaw(value.data(), value.size());
      } else if (Pistache::Http::Header::LowercaseEqualStatic(name, "set-cookie")) {
        Pistache::Http::Cookie::fromRaw(value.data(), value.size());
      } else if (registry.isRegistered(name)) {
        registry.makeHeader(name)->parseRaw(value.data(), value.size());
      }
    } catch (const std::exception& e) {
      const auto* http = dynamic_cast<const Pistache::Http::HttpError*>(&e);
      *status = http != nullptr && http->code() >= 400 && http->code() < 500 ? http->code() : 400;
      return "header " + Shorten(name, 40) + ": '" + Shorten(value, 80) + "': " + Shorten(e.what(), 120);
    }
  }
  return {};
}

}  // namespace

// What this handler knows of one connection's current request.
struct RequestGuard::Connection {
  std::chrono::steady_clock::time_point request_since;  // the parser's, to see it start a new request
  std::string head_bytes;                               // while the head is incomplete
  std::optional<RequestHead> head;
  uint64_t bytes_fed = 0;  // to Pistache's parser for this request: its buffer's fill
  bool refused = false;    // once refused, the connection only drains
  // The request's bytes, head and body, once its head says (0: not known,
  // or a chunked body); and whether bytes past them came with it: the next
  // request, pipelined, which Pistache drops when it dispatches this one.
  uint64_t request_bytes = 0;
  std::optional<ChunkedBody> chunked;  // where a chunked body ends
  // The end of the last request's chunked body, still arriving after
  // Pistache dispatched it: read and dropped.
  std::optional<ChunkedBody> trailer;
  bool pipelined = false;
};

RequestGuard::RequestGuard(std::shared_ptr<Pistache::Http::Handler> inner, uint64_t max_body_bytes, Refusal refuse)
    : inner_(std::move(inner)), max_body_bytes_(max_body_bytes), refuse_(std::move(refuse)) {}

std::shared_ptr<Pistache::Tcp::Handler> RequestGuard::clone() const {
  // Pistache clones the handler for each of its threads, after the endpoint
  // has set the sizes on this one.
  auto inner = std::static_pointer_cast<Pistache::Http::Handler>(inner_->clone());
  inner->setMaxRequestSize(getMaxRequestSize());
  inner->setMaxResponseSize(getMaxResponseSize());
  auto copy = std::make_shared<RequestGuard>(std::move(inner), max_body_bytes_, refuse_);
  copy->setMaxRequestSize(getMaxRequestSize());
  copy->setMaxResponseSize(getMaxResponseSize());
  return copy;
}

void RequestGuard::onRequest(const Pistache::Http::Request& request, Pistache::Http::ResponseWriter response) {
  inner_->onRequest(request, std::move(response));
}

void RequestGuard::onConnection(const std::shared_ptr<Pistache::Tcp::Peer>& peer) {
  if (!inner_has_transport_) {
    // The inner handler answers through this thread's transport, which
    // Pistache hands only to the handler it serves (this one), by
    // Transport::init. So hand it over, and take it back.
    const std::shared_ptr<RequestGuard> self = shared_from_this();
    transport()->init(inner_);
    transport()->init(self);
    inner_has_transport_ = true;
  }
  // Tcp::Handler's members are public; Http::Handler makes its overrides private.
  static_cast<Pistache::Tcp::Handler&>(*inner_).onConnection(peer);  // puts the parser on the peer
  auto connection = std::make_shared<Connection>();
  connection->request_since = getParser(peer)->time();
  peer->putData(kConnectionData, connection);
}

void RequestGuard::onDisconnection(const std::shared_ptr<Pistache::Tcp::Peer>& peer) {
  static_cast<Pistache::Tcp::Handler&>(*inner_).onDisconnection(peer);
}

void RequestGuard::onInput(const char* buffer, size_t len, const std::shared_ptr<Pistache::Tcp::Peer>& peer) {
  auto connection = std::static_pointer_cast<Connection>(peer->tryGetData(kConnectionData));
  if (connection == nullptr) return;  // not connected through onConnection: cannot happen
  if (connection->refused) return;
  const std::shared_ptr<Pistache::Http::RequestParser> parser = getParser(peer);
  // Pistache's parser resets, and takes a new time, when it dispatches a request.
  auto since = parser->time();
  // After a pipelined request the connection closes with its answer; what
  // follows is dropped, as Pistache dropped the rest of the bytes it came in.
  if (connection->pipelined && since != connection->request_since) return;
  if (since != connection->request_since) {
    std::optional<ChunkedBody> unfinished = std::move(connection->chunked);
    *connection = Connection{};
    connection->request_since = since;
    // Pistache dispatches a chunked request at its last chunk ("0\r\n"),
    // before the trailer fields and the blank line that end the body; those
    // that arrive after the dispatch are the body's, not the next request's.
    if (unfinished && !unfinished->ended() && unfinished->error().empty()) connection->trailer = std::move(unfinished);
  }
  if (connection->trailer) {
    const size_t tail = connection->trailer->Feed(std::string_view(buffer, len));
    // Past its end, or if it is not a trailer after all, the bytes are the next request's.
    if (!connection->trailer->error().empty()) {
      connection->trailer.reset();
    } else {
      if (connection->trailer->ended()) connection->trailer.reset();
      buffer += tail;
      len -= tail;
      if (len == 0) return;
    }
  }
  if (connection->bytes_fed == 0) {
    // A request's first bytes: the client's time to send it starts now, not
    // when the connection's last request was dispatched, and the header and
    // body timeouts apply to it again. (The parser holds nothing yet.)
    parser->reset();
    since = connection->request_since = parser->time();
    peer->setIdle(false);
  }

  size_t body_from = 0;  // where this request's body starts in buffer
  if (!connection->head) {
    const size_t searched = connection->head_bytes.size();
    const size_t room = kMaxHeadBytes - std::min(kMaxHeadBytes, searched);
    connection->head_bytes.append(buffer, std::min(len, room));
    connection->head = ParseRequestHead(connection->head_bytes, searched);
    if (connection->head) {
      connection->head_bytes.clear();
      const std::string syntax_error = connection->head->SyntaxError();
      if (!syntax_error.empty()) return Refuse(peer, *connection, 400, syntax_error);
      const std::string framing_error = connection->head->FramingError();
      if (!framing_error.empty()) return Refuse(peer, *connection, 400, framing_error);
      const std::string coding_error = connection->head->ContentCodingError();
      if (!coding_error.empty()) return Refuse(peer, *connection, 415, coding_error);
      const std::optional<uint64_t> declared = connection->head->ContentLength();
      if (declared && *declared > max_body_bytes_) {
        return Refuse(peer, *connection, 413, BodyTooLarge(declared, max_body_bytes_));
      }
      int header_status = 400;
      const std::string header_error = HeaderValueError(*connection->head, &header_status);
      if (!header_error.empty()) return Refuse(peer, *connection, header_status, header_error);
      if (connection->head->Field("transfer-encoding")) {
        connection->chunked.emplace();  // chunked (FramingError refused any other coding)
      } else {
        connection->request_bytes = connection->head->size + declared.value_or(0);
      }
      body_from = std::min(len, connection->head->size - searched);
      // Pistache never answers "Expect: 100-continue", so curl waited 1 s
      // before sending any body over 1 MB.
      if (connection->head->ExpectsContinue()) {
        std::string go_on = "HTTP/1.1 100 Continue\r\n\r\n";
        const size_t size = go_on.size();
        peer->send(Pistache::RawBuffer(std::move(go_on), size));
      }
    }
  }
  // Pistache refuses a request when its buffer would overflow; refuse it first.
  if (connection->bytes_fed + len > getMaxRequestSize()) {
    return Refuse(peer, *connection, 413, BodyTooLarge(std::nullopt, max_body_bytes_));
  }
  // Bytes past the request's end are the next request: read by the answer
  // (AnswerCloses), marked while Pistache dispatches this one.
  if (connection->request_bytes != 0 && connection->bytes_fed + len > connection->request_bytes) {
    connection->pipelined = true;
  }
  if (connection->chunked && !connection->chunked->ended() && body_from < len) {  // set with the head
    const size_t body = connection->chunked->Feed(std::string_view(buffer + body_from, len - body_from));
    if (!connection->chunked->error().empty()) return Refuse(peer, *connection, 400, connection->chunked->error());
    if (connection->chunked->ended() && body_from + body < len) connection->pipelined = true;
  }
  connection->bytes_fed += len;
  static_cast<Pistache::Tcp::Handler&>(*inner_).onInput(buffer, len, peer);
  // A new parser time: a request arrived whole and went to the router.
  if (parser->time() != since) peer->setIdle(true);
}

void RequestGuard::Refuse(const std::shared_ptr<Pistache::Tcp::Peer>& peer, Connection& connection, int status,
                          const std::string& message) {
  connection.refused = true;
  Pistache::Http::ResponseWriter writer(Pistache::Http::Version::Http11, transport(), this, peer);
  writer.headers().add<Pistache::Http::Header::Connection>(Pistache::Http::ConnectionControl::Close);
  refuse_(connection.head.value_or(RequestHead{}), status, message, std::move(writer));
}

std::optional<bool> RequestGuard::AnswerCloses(const Pistache::Tcp::Peer& peer) {
  auto connection = std::static_pointer_cast<Connection>(peer.tryGetData(kConnectionData));
  if (connection == nullptr || !connection->head) return std::nullopt;
  return connection->refused || connection->pipelined || !connection->head->KeepsAlive();
}

std::string BodyTooLarge(std::optional<uint64_t> body_bytes, uint64_t max_body_bytes) {
  const bool known = body_bytes && *body_bytes != std::numeric_limits<uint64_t>::max();  // else it overflowed
  return "body: " + (known ? std::to_string(*body_bytes) + " bytes, " : std::string()) + "over the limit of " +
         std::to_string(max_body_bytes) + " bytes (raise with --max-body-bytes)";
}

}  // namespace intgrads
