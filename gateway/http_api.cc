#include "gateway/http_api.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/secret.h"
#include "common/text.h"
#include "common/zip.h"
#include "gateway/decode_pool.h"
#include "gateway/request_guard.h"
#include "gateway/routes.h"

namespace intgrads {

using nlohmann::json;
using Pistache::Http::Code;
using Pistache::Http::ResponseWriter;
using Pistache::Http::Mime::MediaType;

namespace {

const MediaType kJson = MediaType::fromString("application/json");

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

std::string DumpJson(const json& body) {
  // Messages may quote user input: invalid UTF-8 is replaced, never thrown on.
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

// A request header's value as the client sent it. Pistache keeps the raw
// text of most headers; for the others, the typed header writes it (its
// Accept writes nothing, so the raw text comes first).
template <typename H>
std::string HeaderText(const Pistache::Rest::Request& request) {
  if (auto raw = request.headers().tryGetRaw(H::Name)) return raw->value();
  if (auto typed = request.headers().tryGet<H>()) {
    std::ostringstream text;
    typed->write(text);
    return text.str();
  }
  return {};
}

std::string Printf(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), format, value);
  return buffer;
}

// An attribution's time, stage by stage, in seconds: reading the request
// and its images (decode), waiting for a worker (queue) and in the worker's
// queue (wait), the worker's part (compute: prepare, attribute, copy to the
// host, encode, gzip), and the rest in the gateway (the ZeroMQ hops, writing
// the answer): together, `total`.
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

}  // namespace

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

// One request's answer: the writer, the route it came by and when it
// arrived. Every answer goes through Send, which counts it in the metrics.
// Exchanges are made on Pistache's thread that reads the request.
class Exchange {
 public:
  Exchange(ResponseWriter writer, std::string route, Metrics& metrics)
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

  void Header(const std::string& name, const std::string& value) {
    writer_.headers().add(std::make_shared<TextHeader>(name, value));
  }
  // A HEAD request: the answer's head alone, with the Content-Length its body would have.
  void HeadOnly() { head_only_ = true; }
  // Keeps `held` (a share of the decoding budget) until the exchange is gone: answered, and let go of.
  void Hold(std::shared_ptr<void> held) { held_.push_back(std::move(held)); }
  // Writes the answer straight to the connection, the body taken over, not
  // through ResponseWriter::send: Pistache 0.0.5 copies a body into a buffer
  // grown by doubling from 512 bytes and then copies it once more, which
  // took 1.8 ms of a 1.1 MB answer (docs/PERFORMANCE.md).
  Pistache::Async::Promise<ssize_t> Send(int status, std::string body, const MediaType& type) {
    metrics_.Record(route_, status, std::chrono::duration<double>(Clock::now() - received_).count());
    const std::shared_ptr<Pistache::Tcp::Peer> peer = writer_.getPeer();
    if (peer == nullptr) return Pistache::Async::Promise<ssize_t>::rejected(std::runtime_error("the client left"));
    std::ostringstream head;
    head << "HTTP/1.1 " << status << ' ' << Pistache::Http::codeString(static_cast<Code>(status)) << "\r\n";
    writer_.headers().add<Pistache::Http::Header::ContentType>(type);
    for (const auto& header : writer_.headers().list()) {
      head << header->name() << ": ";
      header->write(head);
      head << "\r\n";
    }
    head << "Content-Length: " << body.size() << "\r\n\r\n";
    if (head_only_) body.clear();
    Pistache::Async::Promise<ssize_t> sent = Write(*peer, head.str(), std::move(body));
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
  Pistache::Async::Promise<ssize_t> Json(int status, const json& body) { return Send(status, DumpJson(body), kJson); }
  Pistache::Async::Promise<ssize_t> Error(int status, const std::string& message) {
    if (status == 503) Header("Retry-After", "1");
    return Json(status, json{{"error", message}});
  }
  Pistache::Async::Promise<ssize_t> Unauthorized() {
    Header("WWW-Authenticate", "Bearer");
    return Error(401, "authorization: this service needs 'Authorization: Bearer <token>'");
  }
  bool gone() const { return writer_.getPeer() == nullptr; }
  Clock::time_point received() const { return received_; }

 private:
  // A small body goes with the head; a large one after it, not copied.
  static Pistache::Async::Promise<ssize_t> Write(Pistache::Tcp::Peer& peer, std::string head, std::string body) {
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

  ResponseWriter writer_;
  std::string route_;
  Metrics& metrics_;
  Clock::time_point received_;
  std::shared_ptr<OwnedSocket> close_after_answer_;  // when the answer says Connection: Close
  bool head_only_ = false;
  std::vector<std::shared_ptr<void>> held_;
};

int HttpStatusOf(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk: return 200;
    case StatusCode::kMalformed: return 400;
    case StatusCode::kInvalid: return 422;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kTooLarge: return 413;
    case StatusCode::kNotAcceptable: return 406;
    case StatusCode::kUnavailable: return 503;
    default: return 500;
  }
}

HttpApi::Handler HttpApi::HandlerFor(const std::string& method, const std::string& path) const {
  if (method == "POST")
    return path.find("/attributions") != std::string::npos ? &HttpApi::PostAttributions : &HttpApi::PostModel;
  if (path == "/v1/model" || path == "/v1/models/{name}") return &HttpApi::GetModel;
  if (path == "/v1/models") return &HttpApi::GetModels;
  if (path == "/v1/workers") return &HttpApi::GetWorkers;
  if (path == "/healthz") return &HttpApi::GetHealth;
  if (path == "/readyz") return &HttpApi::GetReady;
  if (path == "/metrics") return &HttpApi::GetMetrics;
  return &HttpApi::GetPage;  // /, /docs, /openapi.json
}

HttpApi::HttpApi(Broker& broker, HttpOptions options) : broker_(broker), options_(std::move(options)) {
  for (const RouteSpec& route : HttpRoutes()) {
    const Handler handler = HandlerFor(route.method, route.path);
    const std::string label = route.path;
    const bool open = route.open;
    auto serve = [this, handler, label, open](bool head_only) {
      return [this, handler, label, open, head_only](const Pistache::Rest::Request& request, ResponseWriter writer) {
        auto exchange = std::make_shared<Exchange>(std::move(writer), label, metrics_);
        if (head_only) exchange->HeadOnly();
        if (open || Authorized(request, *exchange)) (this->*handler)(request, exchange);
        return Pistache::Rest::Route::Result::Ok;
      };
    };
    if (route.method == "POST") {
      Pistache::Rest::Routes::Post(router_, RouterPath(route.path), serve(false));
    } else {
      Pistache::Rest::Routes::Get(router_, RouterPath(route.path), serve(false));
      Pistache::Rest::Routes::Head(router_, RouterPath(route.path), serve(true));
    }
  }
  // Pistache's router answers a path served for another method with a
  // plain-text 405 of its own, unless a custom handler takes the request first.
  router_.addCustomHandler([this](const Pistache::Rest::Request& request, ResponseWriter writer) {
    std::string label = RouteOf("GET", request.resource());
    if (label == "(none)") label = RouteOf("POST", request.resource());
    auto exchange = std::make_shared<Exchange>(std::move(writer), label, metrics_);
    if (request.method() == Pistache::Http::Method::Head) exchange->HeadOnly();
    if (Authorized(request, *exchange)) NoRoute(request, exchange);
    return Pistache::Rest::Route::Result::Ok;
  });
}

HttpApi::~HttpApi() = default;

void HttpApi::NoRoute(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange) {
  std::string allowed;
  if (RouteOf("GET", request.resource()) != "(none)") allowed = "GET, HEAD";
  if (RouteOf("POST", request.resource()) != "(none)") allowed += (allowed.empty() ? "" : ", ") + std::string("POST");
  if (!allowed.empty()) {
    exchange->Header("Allow", allowed);
    exchange->Error(405, "method " + std::string(Pistache::Http::methodString(request.method())) + ": " +
                             Shorten(request.resource(), 128) + " answers " + allowed);
    return;
  }
  exchange->Error(404, "no route " + Shorten(request.resource(), 128) +
                           "; the routes are listed at /openapi.json and /docs (POST /model/, "
                           "POST /v1/attributions, GET /v1/model, /healthz, /readyz, /metrics)");
}

StatusOr<uint16_t> HttpApi::Start() {
  try {
    Pistache::Address address(options_.host == "localhost" ? "127.0.0.1" : options_.host,
                              Pistache::Port(options_.port));
    endpoint_ = std::make_unique<Pistache::Http::Endpoint>(address);
    // The header and body timeouts bound a client slow to send its request;
    // RequestGuard lifts them once it has (pistache issue #1030), and from
    // then on the keep-alive timeout, which outlasts the request's deadline
    // by the 5 s a late answer needs to be written, applies to the connection.
    // RequestGuard's ClientTimer answers a client too slow to send its
    // request (a JSON 408); Pistache's own header and body timeouts, a
    // plain-text 408, are a backstop behind it.
    const std::chrono::milliseconds client_timeout(options_.client_timeout_ms);
    const auto backstop = client_timeout + std::chrono::seconds(5);
    const auto keepalive = std::chrono::milliseconds(options_.request_timeout_ms) + std::chrono::seconds(5);
    client_timer_ = std::make_shared<ClientTimer>(client_timeout);
    decode_ = std::make_unique<DecodePool>(options_.decode_threads, options_.decode_memory_bytes, 256);
    endpoint_->init(Pistache::Http::Endpoint::options()
                        .threads(options_.threads)
                        .flags(Pistache::Tcp::Options::ReuseAddr)
                        .maxRequestSize(options_.max_body_bytes + kMaxHeadBytes)
                        .headerTimeout(backstop)
                        .bodyTimeout(backstop)
                        .keepaliveTimeout(keepalive));
    endpoint_->setHandler(std::make_shared<RequestGuard>(
        router_.handler(), options_.max_body_bytes,
        [this](const RequestHead& head, int status, const std::string& message, ResponseWriter writer) {
          return RefuseRequest(head, status, message, std::move(writer));
        },
        client_timer_));
    endpoint_->serveThreaded();
    return static_cast<uint16_t>(endpoint_->getPort());
  } catch (const std::exception& e) {
    return InvalidError("cannot serve HTTP on " + options_.host + ":" + std::to_string(options_.port) + ": " +
                        e.what());
  }
}

void HttpApi::Shutdown() {
  if (client_timer_) client_timer_->Stop();  // it answers through the connections' handlers
  if (endpoint_) endpoint_->shutdown();
}

bool HttpApi::TokenAccepted(std::string_view authorization) const {
  if (options_.token.empty()) return true;
  // credentials = auth-scheme 1*SP token68; the scheme in any case (RFC 9110, 11.1 and 11.4).
  authorization = Trim(authorization);
  const size_t space = authorization.find(' ');
  if (space == std::string_view::npos || Lower(authorization.substr(0, space)) != "bearer") return false;
  return ConstantTimeEquals(Trim(authorization.substr(space + 1)), options_.token);
}

bool HttpApi::Authorized(const Pistache::Rest::Request& request, Exchange& exchange) const {
  if (TokenAccepted(HeaderText<Pistache::Http::Header::Authorization>(request))) return true;
  exchange.Unauthorized();
  return false;
}

bool HttpApi::BodyWithinLimit(const std::string& body, Exchange& exchange) const {
  if (body.size() <= options_.max_body_bytes) return true;
  exchange.Error(413, BodyTooLarge(body.size(), options_.max_body_bytes));
  return false;
}

Pistache::Async::Promise<ssize_t> HttpApi::RefuseRequest(const RequestHead& head, int status,
                                                         const std::string& message, ResponseWriter writer) {
  Exchange exchange(std::move(writer), RouteOf(head.method, head.target), metrics_);
  // A client without the token learns nothing, not even the limit.
  if (!TokenAccepted(head.Field("authorization").value_or(""))) return exchange.Unauthorized();
  return exchange.Error(status, message);
}

namespace {

// A request's body, taken over rather than copied (a body is up to
// --max-body-bytes): Pistache's router hands the handler its own copy of the
// request, which it drops once the handler returns.
std::string TakeBody(const Pistache::Rest::Request& request) {
  return std::move(const_cast<std::string&>(request.body()));  // NOLINT(cppcoreguidelines-pro-type-const-cast)
}

// A JSON body's parse holds the body and the pixels it reads, and for a body
// the fast scanner declines, nlohmann's document of it: at most this many
// times the body's bytes (docs/RELIABILITY.md, "Decoding").
constexpr uint64_t kJsonMemoryFactor = 4;

}  // namespace

std::shared_ptr<DecodePool::Reservation> HttpApi::Reserve(uint64_t bytes, Exchange& exchange) {
  std::shared_ptr<DecodePool::Reservation> held = decode_->Reserve(bytes);
  if (held == nullptr) {
    exchange.Error(503, "the gateway's memory for the requests in hand (" +
                            std::to_string(decode_->budget_bytes() >> 20) +
                            " MiB, --decode-memory-mb) is taken: their bodies and images; retry shortly");
  }
  return held;
}

bool HttpApi::Offload(const std::shared_ptr<Exchange>& exchange, uint64_t bytes, std::function<void()> work) {
  std::shared_ptr<DecodePool::Reservation> held = Reserve(bytes, *exchange);
  if (held == nullptr) return false;
  if (!decode_->Post([held, work = std::move(work)] { work(); })) {
    exchange->Error(503, "too many requests are waiting to be read; retry shortly");
    return false;
  }
  return true;
}

void HttpApi::PostModel(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange) {
  auto body = std::make_shared<std::string>(TakeBody(request));
  if (!BodyWithinLimit(*body, *exchange)) return;
  std::string name = request.hasParam(":name") ? request.param(":name").as<std::string>() : "";
  Offload(exchange, body->size() * kJsonMemoryFactor,
          [this, exchange, name = std::move(name), body] { AnswerModel(exchange, name, *body); });
}

void HttpApi::AnswerModel(const std::shared_ptr<Exchange>& exchange, const std::string& name, const std::string& body) {
  auto model = ResolveModel(name);
  if (!model.ok()) {
    exchange->Error(HttpStatusOf(model.status()), model.status().message());
    return;
  }
  // Validate against the model's classes (CIFAR-10 until a worker has announced one).
  const std::vector<std::string> classes = broker_.Classes(*model).value_or(Cifar10Classes());
  auto parsed = ParseModelRequest(body, classes, options_.limits);
  if (!parsed.ok()) {
    exchange->Error(HttpStatusOf(parsed.status()), parsed.status().message());
    return;
  }
  // The pixels stay in the job until it is answered: a share of the budget until then.
  auto held = Reserve(parsed->image.pixels.size(), *exchange);
  if (held == nullptr) return;
  exchange->Hold(std::move(held));
  Job job;
  job.model = *model;
  job.request.target = parsed->target;
  job.request.n_steps = parsed->n_steps;
  job.request.method = parsed->method;
  job.request.height = parsed->image.height;
  job.request.width = parsed->image.width;
  job.request.channels = parsed->image.channels;
  job.request.pixels.assign(parsed->image.pixels.begin(), parsed->image.pixels.end());
  job.deadline = exchange->received() + std::chrono::milliseconds(options_.request_timeout_ms);
  job.abandoned = [exchange] { return exchange->gone(); };
  const int n_steps = parsed->n_steps;
  const double decode = std::chrono::duration<double>(Clock::now() - exchange->received()).count();
  job.done = [this, exchange, n_steps, decode](JobReply reply) {
    if (reply.status != 200) {
      exchange->Error(reply.status, reply.error);
      return;
    }
    metrics_.AddAttribution(n_steps);
    const auto stages =
        Stages(reply, decode, std::chrono::duration<double>(Clock::now() - exchange->received()).count());
    metrics_.RecordStages(stages);
    exchange->Header("Server-Timing", ServerTiming(stages));
    exchange->Header("Content-Disposition", "attachment; filename=\"returned_gradients.gzip\"");
    exchange->Header("X-Convergence-Delta", Printf("%.9g", reply.convergence_delta));
    exchange->Header("X-Compute-Seconds", Printf("%.6f", reply.compute_seconds));
    exchange->Send(200, std::move(reply.payload), MediaType::fromString(reply.content_type));
  };
  Status submitted = broker_.Submit(std::move(job));
  if (!submitted.ok()) exchange->Error(503, submitted.message());
}

namespace {

// The answers to the jobs of one /v1/attributions request, gathered until
// the last arrives; then one HTTP answer.
struct Gathering {
  std::mutex mutex;
  size_t remaining = 0;
  std::vector<JobReply> replies;
  std::vector<std::string> names;
  std::vector<std::string> classes;
  Negotiated negotiated;
  int n_steps = 0;
  double decode = 0.0;  // seconds to read the request and decode its images

  // Keeps job i's reply; true for the last one.
  bool Add(size_t i, JobReply reply) {
    std::lock_guard<std::mutex> lock(mutex);
    replies[i] = std::move(reply);
    return --remaining == 0;
  }
};

// A file name's stem, safe in a zip or a header: "my cat.jpg" -> "my_cat".
std::string SafeStem(const std::string& name) {
  std::string safe;
  for (char c : name.substr(0, name.rfind('.')).substr(0, 64)) {
    const bool plain = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
    safe += plain ? c : '_';
  }
  return safe;
}

// The file of image `index` in a zip: 000-cat.npz, 001.npz.
std::string ZipStem(const std::string& name, size_t index) {
  char number[24];
  std::snprintf(number, sizeof(number), "%03zu", index);
  const std::string stem = SafeStem(name);
  return std::string(number) + (stem.empty() ? "" : "-" + stem);
}

json Summary(const JobReply& reply, const std::vector<std::string>& classes, size_t index, const std::string& name) {
  // (index: the image's, in the request's order.)
  const auto& p = reply.probabilities;
  const int predicted = p.empty() ? -1 : static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
  auto class_name = [&classes](int i) { return i >= 0 && i < static_cast<int>(classes.size()) ? classes[i] : ""; };
  const double probability = reply.target >= 0 && reply.target < static_cast<int>(p.size()) ? p[reply.target] : 0.0;
  return json{{"index", index},
              {"name", name},
              {"target_class", reply.target},
              {"target_name", class_name(reply.target)},
              {"probability", probability},
              {"predicted_class", predicted},
              {"predicted_name", class_name(predicted)},
              {"convergence_delta", reply.convergence_delta},
              {"n_steps", reply.n_steps},
              {"tolerance_met", reply.tolerance_met},
              {"compute_seconds", reply.compute_seconds}};
}

void Answer(Exchange& exchange, Gathering& g, Metrics& metrics) {
  const size_t images = g.replies.size();
  for (size_t i = 0; i < images; ++i) {
    const JobReply& r = g.replies[i];
    if (r.status != 200) {
      exchange.Error(r.status, (images > 1 ? "image " + std::to_string(i) + ": " : std::string()) + r.error);
      return;
    }
  }
  // Every result in order: image by image, each image's targets in turn.
  struct Result {
    const JobReply* reply;
    size_t image;
  };
  std::vector<Result> results;
  for (size_t i = 0; i < images; ++i) {
    results.push_back({&g.replies[i], i});
    for (const JobReply& other : g.replies[i].others) results.push_back({&other, i});
  }
  const double total = std::chrono::duration<double>(Clock::now() - exchange.received()).count();
  for (const Result& r : results) {
    metrics.AddAttribution(r.reply->n_steps > 0 ? r.reply->n_steps : g.n_steps);
    if (r.reply == &g.replies[r.image]) metrics.RecordStages(Stages(*r.reply, g.decode, total));
  }
  const PayloadFormat& format = *g.negotiated.format;
  if (results.size() == 1 && !g.negotiated.zip) {
    JobReply& r = g.replies.front();
    const json summary = Summary(r, g.classes, 0, g.names.front());
    exchange.Header("X-Target-Class", std::to_string(r.target));
    exchange.Header("X-Target-Name", summary["target_name"].get<std::string>());
    exchange.Header("X-Probability", Printf("%.6g", summary["probability"].get<double>()));
    exchange.Header("X-Predicted-Class", std::to_string(summary["predicted_class"].get<int>()));
    exchange.Header("X-Predicted-Name", summary["predicted_name"].get<std::string>());
    exchange.Header("X-Convergence-Delta", Printf("%.9g", r.convergence_delta));
    exchange.Header("X-Compute-Seconds", Printf("%.6f", r.compute_seconds));
    exchange.Header("X-N-Steps", std::to_string(r.n_steps));
    exchange.Header("Server-Timing", ServerTiming(Stages(r, g.decode, total)));
    if (!r.tolerance_met) exchange.Header("X-Tolerance-Met", "false");
    const std::string stem = SafeStem(g.names.front());
    exchange.Header("Content-Disposition", "attachment; filename=\"" + (stem.empty() ? "" : stem + "-") +
                                               "attribution" + format.extension + "\"");
    exchange.Send(200, std::move(r.payload), MediaType::fromString(r.content_type));
    return;
  }
  json summaries = json::array();
  for (const Result& r : results) summaries.push_back(Summary(*r.reply, g.classes, r.image, g.names[r.image]));
  if (!g.negotiated.zip) {  // JSON: one document, the results in order
    std::string body = "{\"summary\":" + DumpJson(summaries) + ",\"results\":[";
    for (size_t i = 0; i < results.size(); ++i) body += (i > 0 ? "," : "") + results[i].reply->payload;
    body += "]}";
    exchange.Send(200, std::move(body), kJson);
    return;
  }
  ZipWriter zip;
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    // 000-cat.npz; with several targets per image, 000-cat-dog.npz.
    std::string file = ZipStem(g.names[r.image], r.image);
    if (!g.replies[r.image].others.empty()) file += "-" + SafeStem(summaries[i]["target_name"].get<std::string>());
    file += format.extension;
    summaries[i]["file"] = file;
    zip.Add(file, r.reply->payload);
  }
  zip.Add("summary.json", DumpJson(summaries));
  exchange.Header("Content-Disposition", "attachment; filename=\"attributions.zip\"");
  exchange.Send(200, zip.Finish(), MediaType::fromString("application/zip"));
}

}  // namespace

// What PostAttributions reads off the request on the I/O thread, for AnswerAttributions.
struct HttpApi::AttributionsCall {
  std::string body;
  std::string content_type;
  std::string accept;
  QueryParams query;
  std::string model;  // from the path, if it names one
};

void HttpApi::PostAttributions(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange) {
  auto call = std::make_shared<AttributionsCall>();
  call->body = TakeBody(request);
  if (!BodyWithinLimit(call->body, *exchange)) return;
  for (auto it = request.query().parameters_begin(); it != request.query().parameters_end(); ++it) {
    // Pistache splits the query at '&' and '=' and decodes nothing.
    const std::optional<std::string> name = DecodeQueryComponent(it->first);
    const std::optional<std::string> value = DecodeQueryComponent(it->second);
    if (!name || !value) {
      exchange->Error(400, "query: '" + Shorten(it->first + "=" + it->second, 80) +
                               "' is not percent-encoded (a '%' takes two hexadecimal digits)");
      return;
    }
    call->query.emplace_back(*name, *value);
  }
  std::sort(call->query.begin(), call->query.end());  // Pistache keeps them unordered
  call->content_type = HeaderText<Pistache::Http::Header::ContentType>(request);
  call->accept = HeaderText<Pistache::Http::Header::Accept>(request);
  if (request.hasParam(":name")) call->model = request.param(":name").as<std::string>();
  // The body while it is read, as JSON at worst; the images' pixels come after.
  Offload(exchange, call->body.size() * kJsonMemoryFactor,
          [this, exchange, call] { AnswerAttributions(exchange, *call); });
}

void HttpApi::AnswerAttributions(const std::shared_ptr<Exchange>& exchange, const AttributionsCall& call) {
  const AttributionLimits limits{options_.limits, options_.max_images, options_.max_request_pixels};
  auto parsed = ReadAttributionsRequest(call.content_type, call.query, call.body, limits);
  if (!parsed.ok()) {
    exchange->Error(HttpStatusOf(parsed.status()), parsed.status().message());
    return;
  }
  // The images' pixels, decoded and then held in the jobs until answered:
  // reserved from their headers before any is decoded.
  auto held = Reserve(RequestImageBytes(*parsed), *exchange);
  if (held == nullptr) return;
  exchange->Hold(std::move(held));
  if (Status decoded = DecodeUploads(&parsed.value(), limits); !decoded.ok()) {
    exchange->Error(HttpStatusOf(decoded), decoded.message());
    return;
  }
  auto model = ResolveModel(!call.model.empty() ? call.model : parsed->model);
  if (!model.ok()) {
    exchange->Error(HttpStatusOf(model.status()), model.status().message());
    return;
  }
  auto gathering = std::make_shared<Gathering>();
  gathering->classes = broker_.Classes(*model).value_or(Cifar10Classes());
  gathering->n_steps = parsed->n_steps;
  // Each image's classes, checked before any work.
  std::vector<std::vector<int>> targets;
  size_t results = 0;
  for (size_t i = 0; i < parsed->inputs.size(); ++i) {
    const std::string where = parsed->inputs.size() > 1 ? "image " + std::to_string(i) + ": " : "";
    const std::vector<std::string>& given = parsed->inputs[i].targets;
    auto resolved = ResolveTargets(given, gathering->classes);
    if (resolved.ok() && parsed->top_k > 0 && given == std::vector<std::string>{"predicted"}) resolved->clear();
    Status valid = resolved.status();
    if (valid.ok()) {
      valid = ValidateTargets(*resolved, parsed->top_k, static_cast<int>(gathering->classes.size()), parsed->method,
                              options_.limits);
    }
    if (!valid.ok()) {
      exchange->Error(HttpStatusOf(valid), where + valid.message());
      return;
    }
    results +=
        parsed->top_k > 0 ? std::min(gathering->classes.size(), static_cast<size_t>(parsed->top_k)) : resolved->size();
    targets.push_back(std::move(resolved).value());
  }
  auto negotiated = NegotiateFormat(call.accept, parsed->format, results);
  if (!negotiated.ok()) {
    exchange->Error(HttpStatusOf(negotiated.status()), negotiated.status().message());
    return;
  }
  gathering->negotiated = *negotiated;
  if (Status regions = ValidateRegionRequest(parsed->regions, negotiated->format->name); !regions.ok()) {
    exchange->Error(HttpStatusOf(regions), regions.message());
    return;
  }
  std::vector<Job> jobs;
  for (size_t i = 0; i < parsed->inputs.size(); ++i) {
    AttributionInput& input = parsed->inputs[i];
    Job job;
    job.model = *model;
    if (targets[i].size() == 1 && parsed->top_k == 0) {
      job.request.target = targets[i].front();  // one class: the request every worker version reads
    } else {
      job.request.targets = targets[i];
      job.request.top_k = parsed->top_k;
    }
    job.request.n_steps = parsed->n_steps;
    job.request.method = parsed->method;
    job.request.format = negotiated->format->name;
    job.request.heatmap = parsed->heatmap;
    job.request.paths = parsed->paths;
    job.request.regions = parsed->regions;
    job.request.height = input.image.height;
    job.request.width = input.image.width;
    job.request.channels = input.image.channels;
    job.request.pixels.assign(input.image.pixels.begin(), input.image.pixels.end());
    job.deadline = exchange->received() + std::chrono::milliseconds(options_.request_timeout_ms);
    job.abandoned = [exchange] { return exchange->gone(); };
    job.done = [this, exchange, gathering, i](JobReply reply) {
      if (gathering->Add(i, std::move(reply))) Answer(*exchange, *gathering, metrics_);
    };
    jobs.push_back(std::move(job));
    gathering->names.push_back(input.name);
  }
  gathering->replies.resize(jobs.size());
  gathering->remaining = jobs.size();
  gathering->decode = std::chrono::duration<double>(Clock::now() - exchange->received()).count();
  for (size_t i = 0; i < jobs.size(); ++i) {
    Status submitted = broker_.Submit(std::move(jobs[i]));
    if (submitted.ok()) continue;
    // The broker will not call this job's done: it is answered with the refusal.
    if (gathering->Add(i, ErrorReply(0, 503, submitted.message()))) Answer(*exchange, *gathering, metrics_);
  }
}

StatusOr<std::string> HttpApi::ResolveModel(const std::string& requested) const {
  const std::vector<std::string> names = broker_.ModelNames();
  auto list = [&names] {
    std::string s;
    for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
    return s;
  };
  if (!requested.empty()) {
    if (std::find(names.begin(), names.end(), requested) != names.end()) return requested;
    return NotFoundError("no worker serves model '" + Shorten(requested, 64) + "'" +
                         (names.empty() ? std::string(" (no worker is ready)") : "; served: " + list()));
  }
  // /model/: the original's single model: the one named "default", or the only one.
  if (std::find(names.begin(), names.end(), "default") != names.end()) return std::string("default");
  if (names.size() == 1) return names.front();
  if (names.empty()) return std::string();  // whichever worker announces itself first
  return InvalidError("several models are served (" + list() +
                      ") and none is named 'default': name one (POST /models/NAME/model, "
                      "/v1/models/NAME/attributions or ?model=NAME)");
}

void HttpApi::GetModel(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange) {
  auto model = ResolveModel(request.hasParam(":name") ? request.param(":name").as<std::string>() : "");
  if (!model.ok()) {
    exchange->Error(HttpStatusOf(model.status()), model.status().message());
    return;
  }
  const auto workers = broker_.Workers();
  std::vector<std::string> devices;
  const WorkerInfo* info = nullptr;
  for (const WorkerSnapshot& w : workers) {
    if (!model->empty() && w.info.model != *model) continue;
    if (info == nullptr) info = &w.info;
    if (std::find(devices.begin(), devices.end(), w.info.device) == devices.end()) devices.push_back(w.info.device);
  }
  if (info == nullptr) {
    exchange->Error(503, "no worker is ready yet; the model is known once one has announced itself");
    return;
  }
  std::vector<std::string> methods = AttributionMethods();
  std::vector<std::string> formats;
  for (const PayloadFormat& f : PayloadFormats()) formats.push_back(f.name);
  exchange->Json(
      200, json{{"name", info->model},
                {"family", info->family},
                {"variant", info->variant},
                {"classes", info->classes},
                {"input_size", info->input_size},
                {"normalization", {{"mean", info->mean}, {"std", info->std}}},
                {"ready", true},  // a worker serves it (else the 503 above)
                {"devices", devices},
                {"workers", std::count_if(workers.begin(), workers.end(),
                                          [info](const WorkerSnapshot& w) { return w.info.model == info->model; })},
                {"methods", methods},
                {"formats", formats},
                {"limits",
                 {{"max_body_bytes", options_.max_body_bytes},
                  {"max_image_side", options_.limits.max_side},
                  {"max_pixels", options_.limits.max_pixels},
                  {"max_n_steps", options_.limits.max_n_steps},
                  {"max_images", options_.max_images},
                  {"max_paths", options_.limits.max_paths},
                  {"max_targets", options_.limits.max_targets},
                  {"request_timeout_ms", options_.request_timeout_ms}}}});
}

void HttpApi::GetModels(const Pistache::Rest::Request&, const std::shared_ptr<Exchange>& exchange) {
  json models = json::array();
  const auto workers = broker_.Workers();
  for (const std::string& name : broker_.ModelNames()) {
    for (const WorkerSnapshot& w : workers) {
      if (w.info.model != name) continue;
      const auto count = std::count_if(workers.begin(), workers.end(),
                                       [&name](const WorkerSnapshot& o) { return o.info.model == name; });
      models.push_back({{"name", name},
                        {"family", w.info.family},
                        {"variant", w.info.variant},
                        {"classes", w.info.classes},
                        {"input_size", w.info.input_size},
                        {"workers", count}});
      break;
    }
  }
  exchange->Json(200, json{{"models", models}});
}

void HttpApi::GetHealth(const Pistache::Rest::Request&, const std::shared_ptr<Exchange>& exchange) {
  exchange->Json(200, json{{"status", "ok"}});
}

void HttpApi::GetReady(const Pistache::Rest::Request&, const std::shared_ptr<Exchange>& exchange) {
  const auto workers = broker_.Workers();
  if (broker_.draining()) {
    exchange->Error(503, "the gateway is shutting down");
    return;
  }
  if (workers.empty()) {
    exchange->Error(503, "no worker is ready yet");
    return;
  }
  exchange->Json(200, json{{"status", "ready"}, {"workers", workers.size()}});
}

void HttpApi::GetWorkers(const Pistache::Rest::Request&, const std::shared_ptr<Exchange>& exchange) {
  json list = json::array();
  for (const WorkerSnapshot& w : broker_.Workers()) {
    list.push_back({{"id", w.id},
                    {"model", w.info.model},
                    {"family", w.info.family},
                    {"variant", w.info.variant},
                    {"device", w.info.device},
                    {"state", w.state},
                    {"in_flight", w.in_flight},
                    {"slots", w.info.slots},
                    {"requests_served", w.served}});
  }
  exchange->Json(200, json{{"workers", list}, {"queue_depth", broker_.QueueDepth()}});
}

void HttpApi::GetMetrics(const Pistache::Rest::Request&, const std::shared_ptr<Exchange>& exchange) {
  exchange->Send(200, metrics_.Render(broker_.Workers(), broker_.QueueDepth()),
                 MediaType::fromString("text/plain; version=0.0.4"));
}

void HttpApi::GetPage(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange) {
  const std::string& path = request.resource();
  if (path == "/openapi.json") {
    exchange->Send(200, std::string(OpenApiDocument()), kJson);
  } else if (path == "/docs" || path == "/docs/") {
    exchange->Send(200, std::string(DocsPage()), MediaType::fromString("text/html; charset=utf-8"));
  } else {
    exchange->Send(200, std::string(WebPage()), MediaType::fromString("text/html; charset=utf-8"));
  }
}

}  // namespace intgrads
