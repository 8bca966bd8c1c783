#include "gateway/http_api.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/secret.h"
#include "common/text.h"
#include "common/zip.h"
#include "gateway/decode_pool.h"
#include "gateway/exchange.h"
#include "gateway/request_guard.h"
#include "gateway/routes.h"

namespace intgrads {

using nlohmann::json;
using Pistache::Http::ResponseWriter;
using Pistache::Http::Mime::MediaType;

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

HttpApi::Handler HttpApi::HandlerFor(RouteHandler handler) {
  switch (handler) {
    case RouteHandler::kPage: return &HttpApi::GetPage;
    case RouteHandler::kModel: return &HttpApi::PostModel;
    case RouteHandler::kAttributions: return &HttpApi::PostAttributions;
    case RouteHandler::kModelInfo: return &HttpApi::GetModel;
    case RouteHandler::kModels: return &HttpApi::GetModels;
    case RouteHandler::kWorkers: return &HttpApi::GetWorkers;
    case RouteHandler::kHealth: return &HttpApi::GetHealth;
    case RouteHandler::kReady: return &HttpApi::GetReady;
    case RouteHandler::kMetrics: return &HttpApi::GetMetrics;
    case RouteHandler::kKServeV1: return &HttpApi::KServeV1;
    case RouteHandler::kV2Server: return &HttpApi::V2Server;
    case RouteHandler::kV2Live: return &HttpApi::V2Live;
    case RouteHandler::kV2Ready: return &HttpApi::V2Ready;
    case RouteHandler::kV2Model: return &HttpApi::V2Model;
    case RouteHandler::kV2ModelReady: return &HttpApi::V2ModelReady;
    case RouteHandler::kV2Infer: return &HttpApi::V2Infer;
    case RouteHandler::kTorchServeExplain: return &HttpApi::TorchServeExplain;
    case RouteHandler::kTorchServePredict: return &HttpApi::TorchServePredict;
    case RouteHandler::kTorchServePing: return &HttpApi::TorchServePing;
  }
  return &HttpApi::NoRoute;
}

HttpApi::HttpApi(Broker& broker, HttpOptions options) : broker_(broker), options_(std::move(options)) {
  // Pistache matches whole segments: routes that differ by a verb after a
  // parameter ({name}:explain, {name}:predict) are one Pistache route, and
  // FindRoute tells them apart.
  std::set<std::pair<std::string, std::string>> registered;
  for (const RouteSpec& route : HttpRoutes()) {
    const std::string path = RouterPath(route.path);
    if (!registered.emplace(route.method, path).second) continue;
    auto serve = [this, method = route.method](bool head_only) {
      return [this, method, head_only](const Request& request, ResponseWriter writer) {
        const RouteSpec* route = FindRoute(method, request.resource());
        auto exchange = std::make_shared<Exchange>(std::move(writer), route ? route->path : "(none)", metrics_);
        if (head_only) exchange->HeadOnly();
        if ((route != nullptr && route->open) || Authorized(request, *exchange)) {
          if (route == nullptr) {
            NoRoute(request, exchange);
          } else {
            (this->*HandlerFor(route->handler))(request, exchange);
          }
        }
        return Pistache::Rest::Route::Result::Ok;
      };
    };
    if (route.method == "POST") {
      Pistache::Rest::Routes::Post(router_, path, serve(false));
    } else if (route.method == "PUT") {
      Pistache::Rest::Routes::Put(router_, path, serve(false));
    } else {
      Pistache::Rest::Routes::Get(router_, path, serve(false));
      Pistache::Rest::Routes::Head(router_, path, serve(true));
    }
  }
  // Pistache's router answers a path served for another method with a
  // plain-text 405 of its own, unless a custom handler takes the request first.
  router_.addCustomHandler([this](const Request& request, ResponseWriter writer) {
    std::string label = "(none)";
    for (const char* method : {"GET", "POST", "PUT"}) {
      if (label == "(none)") label = RouteOf(method, request.resource());
    }
    auto exchange = std::make_shared<Exchange>(std::move(writer), label, metrics_);
    if (request.method() == Pistache::Http::Method::Head) exchange->HeadOnly();
    if (Authorized(request, *exchange)) NoRoute(request, exchange);
    return Pistache::Rest::Route::Result::Ok;
  });
}

HttpApi::~HttpApi() = default;

void HttpApi::NoRoute(const Request& request, const std::shared_ptr<Exchange>& exchange) {
  std::string allowed;
  for (const char* method : {"GET", "POST", "PUT"}) {
    if (FindRoute(method, request.resource()) == nullptr) continue;
    allowed += (allowed.empty() ? "" : ", ") + std::string(method) + (method[0] == 'G' ? ", HEAD" : "");
  }
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
                {"methods", NamesOf<Method>()},
                {"formats", NamesOf<Format>()},
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
    exchange->Send(200, ServedOpenApiDocument(), kJsonType);
  } else if (path == "/docs" || path == "/docs/") {
    exchange->Send(200, std::string(DocsPage()), MediaType::fromString("text/html; charset=utf-8"));
  } else {
    exchange->Send(200, std::string(WebPage()), MediaType::fromString("text/html; charset=utf-8"));
  }
}

}  // namespace intgrads
