#include "gateway/request_guard.h"

#include <pistache/cookie.h>
#include <pistache/http_headers.h>
#include <pistache/transport.h>

#include <algorithm>
#include <string>
#include <utility>

#include "common/request.h"

namespace intgrads {

namespace {

constexpr const char* kConnectionData = "intgrads.request_guard";
using Clock = std::chrono::steady_clock;

}  // namespace

std::string PistacheFieldError(const RequestHead& head, int* status) {
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

// What the guard knows of one connection. Its lock is held while bytes are
// read and dispatched (the connection's thread) and while the client timer
// looks at it.
struct GuardedConnection {
  explicit GuardedConnection(RequestFramer::Limits limits) : framer(std::move(limits)) {}
  std::mutex mutex;
  RequestFramer framer;
  Clock::time_point request_since;            // the parser's time, to see it dispatch a request
  std::optional<Clock::time_point> deadline;  // for the request being received
  std::weak_ptr<Pistache::Tcp::Peer> peer;
  RequestGuard* guard = nullptr;  // the handler of the connection's thread
};

ClientTimer::ClientTimer(std::chrono::milliseconds timeout) : timeout_(timeout), thread_([this] { Run(); }) {}

ClientTimer::~ClientTimer() { Stop(); }

void ClientTimer::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ClientTimer::Watch(const std::shared_ptr<GuardedConnection>& connection) {
  std::lock_guard<std::mutex> lock(mutex_);
  connections_.push_back(connection);
}

void ClientTimer::Run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!wake_.wait_for(lock, std::chrono::milliseconds(100), [this] { return stop_; })) {
    std::vector<std::shared_ptr<GuardedConnection>> live;
    live.reserve(connections_.size());
    for (const auto& weak : connections_) {
      if (auto connection = weak.lock()) live.push_back(std::move(connection));
    }
    connections_.assign(live.begin(), live.end());
    lock.unlock();
    const auto now = Clock::now();
    for (const auto& connection : live) {
      std::lock_guard<std::mutex> connection_lock(connection->mutex);
      if (!connection->deadline || now < *connection->deadline || !connection->framer.receiving()) continue;
      connection->deadline.reset();
      const std::shared_ptr<Pistache::Tcp::Peer> peer = connection->peer.lock();
      if (peer == nullptr) continue;
      connection->framer.Refuse();
      connection->guard->Refuse(peer, *connection, 408,
                                "request: not received whole within " + std::to_string(timeout_.count()) +
                                    " ms of its first byte (raise with --client-timeout-ms)");
    }
    live.clear();  // a connection's last owner may be this thread; let it go without the lock
    lock.lock();
  }
}

RequestGuard::RequestGuard(std::shared_ptr<Pistache::Http::Handler> inner, uint64_t max_body_bytes, Refusal refuse,
                           std::shared_ptr<ClientTimer> timer)
    : inner_(std::move(inner)), max_body_bytes_(max_body_bytes), refuse_(std::move(refuse)), timer_(std::move(timer)) {}

std::shared_ptr<Pistache::Tcp::Handler> RequestGuard::clone() const {
  // Pistache clones the handler for each of its threads, after the endpoint
  // has set the sizes on this one.
  auto inner = std::static_pointer_cast<Pistache::Http::Handler>(inner_->clone());
  inner->setMaxRequestSize(getMaxRequestSize());
  inner->setMaxResponseSize(getMaxResponseSize());
  auto copy = std::make_shared<RequestGuard>(std::move(inner), max_body_bytes_, refuse_, timer_);
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
  RequestFramer::Limits limits;
  limits.max_body_bytes = max_body_bytes_;
  limits.check_fields = PistacheFieldError;
  auto connection = std::make_shared<GuardedConnection>(std::move(limits));
  connection->request_since = getParser(peer)->time();
  connection->peer = peer;
  connection->guard = this;
  peer->putData(kConnectionData, connection);
  timer_->Watch(connection);
}

void RequestGuard::onDisconnection(const std::shared_ptr<Pistache::Tcp::Peer>& peer) {
  static_cast<Pistache::Tcp::Handler&>(*inner_).onDisconnection(peer);
}

void RequestGuard::onInput(const char* buffer, size_t len, const std::shared_ptr<Pistache::Tcp::Peer>& peer) {
  auto connection = std::static_pointer_cast<GuardedConnection>(peer->tryGetData(kConnectionData));
  if (connection == nullptr) return;  // not connected through onConnection: cannot happen
  std::lock_guard<std::mutex> lock(connection->mutex);
  const std::shared_ptr<Pistache::Http::RequestParser> parser = getParser(peer);
  RequestFramer::Step step = connection->framer.Feed(std::string_view(buffer, len));
  if (step.request_starts) {
    // A request's first bytes: the client's time to send it starts now, not
    // when the connection's last request was dispatched, and the header and
    // body timeouts apply to it again. (The parser holds nothing yet.)
    parser->reset();
    connection->request_since = parser->time();
    connection->deadline = Clock::now() + timer_->timeout();
    peer->setIdle(false);
  }
  switch (step.verdict) {
    case RequestFramer::Verdict::kHold:
    case RequestFramer::Verdict::kDrop: return;
    case RequestFramer::Verdict::kRefuse:
      connection->deadline.reset();
      Refuse(peer, *connection, step.status, step.message);
      return;
    case RequestFramer::Verdict::kForward: break;
  }
  // Pistache never answers "Expect: 100-continue", so curl waited 1 s
  // before sending any body over 1 MB.
  if (step.send_continue) {
    std::string go_on = "HTTP/1.1 100 Continue\r\n\r\n";
    const size_t size = go_on.size();
    peer->send(Pistache::RawBuffer(std::move(go_on), size));
  }
  static_cast<Pistache::Tcp::Handler&>(*inner_).onInput(step.forward.data(), step.forward.size(), peer);
  // Pistache's parser resets, and takes a new time, when it dispatches a request.
  if (parser->time() != connection->request_since) {
    peer->setIdle(true);
    connection->framer.Dispatched();
    connection->request_since = parser->time();
    connection->deadline.reset();
  }
}

void RequestGuard::Refuse(const std::shared_ptr<Pistache::Tcp::Peer>& peer, GuardedConnection& connection, int status,
                          const std::string& message) {
  Pistache::Http::ResponseWriter writer(Pistache::Http::Version::Http11, transport(), this, peer);
  writer.headers().add<Pistache::Http::Header::Connection>(Pistache::Http::ConnectionControl::Close);
  refuse_(connection.framer.head().value_or(RequestHead{}), status, message, std::move(writer));
}

std::optional<bool> RequestGuard::AnswerCloses(const Pistache::Tcp::Peer& peer) {
  auto connection = std::static_pointer_cast<GuardedConnection>(peer.tryGetData(kConnectionData));
  if (connection == nullptr) return std::nullopt;
  return connection->framer.AnswerCloses();
}

}  // namespace intgrads
