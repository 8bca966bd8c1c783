#include "gateway/exchange.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "gateway/request_guard.h"

namespace intgrads {

using nlohmann::json;
using Pistache::Http::Code;
using Pistache::Http::ResponseWriter;
using Pistache::Http::Mime::MediaType;

const MediaType kJsonType = MediaType::fromString("application/json");

namespace {

// A response header Pistache has no class for. (Pistache 0.0.5 does not
// serialize Header::Raw entries in responses, so each needs a Header.)
class TextHeader final : public Pistache::Http::Header::Header {
 public:
  TextHeader(std::string name, std::string value) : name_(std::move(name)), value_(std::move(value)) {}
  const char* name() const override { return name_.c_str(); }
  uint64_t hash() const override { return Pistache::Http::Header::detail::hash(name_.c_str()); }
  void write(std::ostream& stream) const override { stream << value_; }

 private:
  std::string name_;
  std::string value_;
};

}  // namespace

std::string DumpJson(const json& body) { return body.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string Printf(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), format, value);
  return buffer;
}

std::vector<std::pair<std::string, double>> Stages(const JobReply& reply, double decode, double total) {
  return {
      {"decode", decode},
      {"queue", reply.queue_seconds},
      {"wait", reply.wait_seconds},
      {"prepare", reply.prepare_seconds},
      {"attribute", reply.attribute_seconds},
      {"copy", reply.copy_seconds},
      {"encode", reply.encode_seconds},
      {"gzip", reply.compress_seconds},
      {"compute", reply.compute_seconds},
      {"gateway", std::max(0.0, total - decode - reply.queue_seconds - reply.wait_seconds - reply.compute_seconds)}};
}

// The Server-Timing header of those stages (durations in ms).
std::string ServerTiming(const std::vector<std::pair<std::string, double>>& stages) {
  std::string header;
  for (const auto& [name, seconds] : stages) {
    header += (header.empty() ? "" : ", ") + name + ";dur=" + Printf("%.3f", 1000.0 * seconds);
  }
  return header;
}

// A socket of our own (a dup of a connection's), closed with the last copy.
class OwnedSocket {
 public:
  explicit OwnedSocket(int fd) : fd_(fd) {}
  OwnedSocket(const OwnedSocket&) = delete;
  OwnedSocket& operator=(const OwnedSocket&) = delete;
  ~OwnedSocket() { ::close(fd_); }
  void CloseForWriting() const { ::shutdown(fd_, SHUT_WR); }

 private:
  int fd_;
};

Exchange::Exchange(ResponseWriter writer, std::string route, Metrics& metrics)
    : writer_(std::move(writer)), route_(std::move(route)), metrics_(metrics), received_(Clock::now()) {
  // Pistache 0.0.5 answers "Connection: Close" to a request that did not
  // ask to be kept alive (RequestGuard to one it refuses, and we to one that
  // came pipelined or whose Connection field Pistache misread), then kept
  // the connection open; a server that says close closes (RFC 9112, 9.6).
  // The socket is held by a dup of its descriptor, taken here where the
  // connection is surely this request's: by the time the answer has been
  // written, Pistache may have closed its descriptor and the number may
  // serve another connection.
  const std::shared_ptr<Pistache::Tcp::Peer> peer = writer_.getPeer();
  if (const std::optional<bool> closes = peer ? RequestGuard::AnswerCloses(*peer) : std::nullopt) {
    writer_.headers().remove<Pistache::Http::Header::Connection>();
    writer_.headers().add<Pistache::Http::Header::Connection>(*closes ? Pistache::Http::ConnectionControl::Close
                                                                      : Pistache::Http::ConnectionControl::KeepAlive);
  }
  const auto connection = writer_.headers().tryGet<Pistache::Http::Header::Connection>();
  if (connection != nullptr && connection->control() == Pistache::Http::ConnectionControl::Close && peer) {
    const int fd = ::fcntl(peer->fd(), F_DUPFD_CLOEXEC, 0);
    if (fd >= 0) close_after_answer_ = std::make_shared<OwnedSocket>(fd);
  }
}

void Exchange::Header(const std::string& name, const std::string& value) {
  writer_.headers().add(std::make_shared<TextHeader>(name, value));
}

namespace {

// A small body goes with the head; a large one after it, not copied.
Pistache::Async::Promise<ssize_t> Write(Pistache::Tcp::Peer& peer, std::string head, std::string body) {
  constexpr size_t kLargeBody = size_t{64} * 1024;
  if (body.size() < kLargeBody) {
    head += body;
    const size_t size = head.size();
    return peer.send(Pistache::RawBuffer(std::move(head), size));
  }
  const size_t head_size = head.size();
  const size_t body_size = body.size();
  peer.send(Pistache::RawBuffer(std::move(head), head_size), MSG_MORE);  // one packet with the body's start
  return peer.send(Pistache::RawBuffer(std::move(body), body_size));
}

}  // namespace

std::string Exchange::Head(int status, const MediaType& type, const std::string& length_field) {
  std::ostringstream head;
  head << "HTTP/1.1 " << status << ' ' << Pistache::Http::codeString(static_cast<Code>(status)) << "\r\n";
  writer_.headers().add<Pistache::Http::Header::ContentType>(type);
  for (const auto& header : writer_.headers().list()) {
    head << header->name() << ": ";
    header->write(head);
    head << "\r\n";
  }
  head << length_field << "\r\n\r\n";
  return head.str();
}

Pistache::Async::Promise<ssize_t> Exchange::Finished(Pistache::Async::Promise<ssize_t> sent) {
  if (close_after_answer_ == nullptr) return sent;
  // Closed for writing once written; the dup is closed when Pistache lets
  // go of the write (also when it drops it, the client gone).
  std::shared_ptr<OwnedSocket> socket = std::move(close_after_answer_);
  return sent.then(
      [socket](ssize_t bytes) {
        socket->CloseForWriting();
        return bytes;
      },
      [socket](const std::exception_ptr&) { socket->CloseForWriting(); });
}

Pistache::Async::Promise<ssize_t> Exchange::Send(int status, std::string body, const MediaType& type) {
  metrics_.Record(route_, status, std::chrono::duration<double>(Clock::now() - received_).count());
  const std::shared_ptr<Pistache::Tcp::Peer> peer = writer_.getPeer();
  if (peer == nullptr) return Pistache::Async::Promise<ssize_t>::rejected(std::runtime_error("the client left"));
  std::string head = Head(status, type, "Content-Length: " + std::to_string(body.size()));
  if (head_only_) body.clear();
  return Finished(Write(*peer, std::move(head), std::move(body)));
}

void Exchange::StartStream(const MediaType& type) {
  if (streaming_) return;
  streaming_ = true;
  const std::shared_ptr<Pistache::Tcp::Peer> peer = writer_.getPeer();
  if (peer == nullptr) return;
  Header("Cache-Control", "no-cache");
  Header("X-Accel-Buffering", "no");  // proxies pass each event on as it comes
  std::string head = Head(200, type, "Transfer-Encoding: chunked");
  const size_t size = head.size();
  peer->send(Pistache::RawBuffer(std::move(head), size));
}

void Exchange::Chunk(const std::string& data) {
  const std::shared_ptr<Pistache::Tcp::Peer> peer = writer_.getPeer();
  if (peer == nullptr || data.empty()) return;
  char length[24];
  std::snprintf(length, sizeof(length), "%zx\r\n", data.size());
  std::string chunk = length + data + "\r\n";
  const size_t size = chunk.size();
  peer->send(Pistache::RawBuffer(std::move(chunk), size));
}

void Exchange::EndStream() {
  metrics_.Record(route_, 200, std::chrono::duration<double>(Clock::now() - received_).count());
  const std::shared_ptr<Pistache::Tcp::Peer> peer = writer_.getPeer();
  if (peer == nullptr) return;
  std::string end = "0\r\n\r\n";
  Finished(peer->send(Pistache::RawBuffer(std::move(end), 5)));
}

Pistache::Async::Promise<ssize_t> Exchange::Error(int status, const std::string& message) {
  if (status == 503) Header("Retry-After", "1");
  return Json(status, json{{"error", message}});
}

Pistache::Async::Promise<ssize_t> Exchange::Unauthorized() {
  Header("WWW-Authenticate", "Bearer");
  return Error(401, "authorization: this service needs 'Authorization: Bearer <token>'");
}

}  // namespace intgrads
