#include "gateway/http_api.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/secret.h"

namespace intgrads {

using nlohmann::json;
using Pistache::Http::Code;
using Pistache::Http::ResponseWriter;

namespace {

const Pistache::Http::Mime::MediaType kJson = Pistache::Http::Mime::MediaType::fromString("application/json");
const Pistache::Http::Mime::MediaType kGzip = Pistache::Http::Mime::MediaType::fromString("application/gzip");

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

void AddHeader(ResponseWriter& response, const std::string& name, const std::string& value) {
  response.headers().add(std::make_shared<TextHeader>(name, value));
}

void SendJson(ResponseWriter& response, int status, const json& body) {
  // Messages may quote user input: invalid UTF-8 is replaced, never thrown on.
  response.send(static_cast<Code>(status), body.dump(-1, ' ', false, json::error_handler_t::replace), kJson);
}

void SendError(ResponseWriter& response, int status, const std::string& message) {
  if (status == 503) AddHeader(response, "Retry-After", "1");
  SendJson(response, status, json{{"error", message}});
}

}  // namespace

int HttpStatusOf(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk: return 200;
    case StatusCode::kInvalid: return 422;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kTooLarge: return 413;
    case StatusCode::kUnavailable: return 503;
    default: return 500;
  }
}

HttpApi::HttpApi(Broker& broker, HttpOptions options) : broker_(broker), options_(std::move(options)) {
  using Pistache::Rest::Routes::bind;
  // Pistache's router ignores a trailing slash: this serves /model and /model/.
  Pistache::Rest::Routes::Post(router_, "/model", bind(&HttpApi::PostModel, this));
  Pistache::Rest::Routes::Post(router_, "/models/:name/model", bind(&HttpApi::PostModel, this));
  Pistache::Rest::Routes::Get(router_, "/v1/models", bind(&HttpApi::GetModels, this));
  Pistache::Rest::Routes::Get(router_, "/healthz", bind(&HttpApi::GetHealth, this));
  Pistache::Rest::Routes::Get(router_, "/readyz", bind(&HttpApi::GetReady, this));
  Pistache::Rest::Routes::Get(router_, "/v1/workers", bind(&HttpApi::GetWorkers, this));
  router_.addNotFoundHandler(bind(&HttpApi::NotFound, this));
}

StatusOr<uint16_t> HttpApi::Start() {
  try {
    Pistache::Address address(options_.host == "localhost" ? "127.0.0.1" : options_.host,
                              Pistache::Port(options_.port));
    endpoint_ = std::make_unique<Pistache::Http::Endpoint>(address);
    // Pistache 0.0.5 applies its header and body timeouts to a connection
    // whose response is still pending (pistache issue #1030): a shorter one
    // would answer a long attribution with 408. So both outlast the request
    // deadline; the deadline itself bounds a slow client.
    const auto timeout = std::chrono::milliseconds(options_.request_timeout_ms) + std::chrono::seconds(60);
    endpoint_->init(Pistache::Http::Endpoint::options()
                        .threads(options_.threads)
                        .flags(Pistache::Tcp::Options::ReuseAddr)
                        .maxRequestSize(options_.max_body_bytes + 64 * 1024)
                        .headerTimeout(timeout)
                        .bodyTimeout(timeout));
    endpoint_->setHandler(router_.handler());
    endpoint_->serveThreaded();
    return static_cast<uint16_t>(endpoint_->getPort());
  } catch (const std::exception& e) {
    return InvalidError("cannot serve HTTP on " + options_.host + ":" + std::to_string(options_.port) + ": " +
                        e.what());
  }
}

void HttpApi::Shutdown() {
  if (endpoint_) endpoint_->shutdown();
}

bool HttpApi::Authorized(const Pistache::Rest::Request& request, ResponseWriter& response) {
  if (options_.token.empty()) return true;
  std::string presented;
  if (auto typed = request.headers().tryGet<Pistache::Http::Header::Authorization>()) {
    presented = typed->value();
  } else if (auto raw = request.headers().tryGetRaw("Authorization")) {
    presented = raw->value();
  }
  if (ConstantTimeEquals(presented, "Bearer " + options_.token)) return true;
  AddHeader(response, "WWW-Authenticate", "Bearer");
  SendJson(response, 401, json{{"error", "authorization: this service needs 'Authorization: Bearer <token>'"}});
  return false;
}

void HttpApi::PostModel(const Pistache::Rest::Request& request, ResponseWriter response) {
  const Clock::time_point received = Clock::now();
  if (!Authorized(request, response)) return;
  const std::string& body = request.body();
  if (body.size() > options_.max_body_bytes) {
    SendError(response, 413,
              "body: " + std::to_string(body.size()) + " bytes is over the limit of " +
                  std::to_string(options_.max_body_bytes) + " (raise with --max-body-bytes)");
    return;
  }
  auto model = ResolveModel(request.hasParam(":name") ? request.param(":name").as<std::string>() : "");
  if (!model.ok()) {
    SendError(response, HttpStatusOf(model.status()), model.status().message());
    return;
  }
  // Validate against the model's classes (CIFAR-10 until a worker has announced one).
  const std::vector<std::string> classes = broker_.Classes(*model).value_or(Cifar10Classes());
  auto parsed = ParseModelRequest(body, classes, options_.limits);
  if (!parsed.ok()) {
    SendError(response, HttpStatusOf(parsed.status()), parsed.status().message());
    return;
  }
  Job job;
  job.model = *model;
  job.request.target = parsed->target;
  job.request.n_steps = parsed->n_steps;
  job.request.method = parsed->method;
  job.request.height = parsed->image.height;
  job.request.width = parsed->image.width;
  job.request.channels = parsed->image.channels;
  job.request.pixels.assign(parsed->image.pixels.begin(), parsed->image.pixels.end());
  job.deadline = Clock::now() + std::chrono::milliseconds(options_.request_timeout_ms);
  auto writer = std::make_shared<ResponseWriter>(std::move(response));
  job.abandoned = [writer] { return writer->getPeer() == nullptr; };
  job.done = [writer, received](const JobReply& reply) {
    if (reply.status != 200) {
      SendError(*writer, reply.status, reply.error);
      return;
    }
    // The gateway's own share: from the handler's start to here, less the
    // worker's time on the request (validation, the ZeroMQ hops, queueing).
    const double total_ms = std::chrono::duration<double, std::milli>(Clock::now() - received).count();
    char timing[96];
    std::snprintf(timing, sizeof(timing), "gateway;dur=%.3f, compute;dur=%.3f",
                  total_ms - 1000.0 * reply.compute_seconds, 1000.0 * reply.compute_seconds);
    AddHeader(*writer, "Server-Timing", timing);
    char delta[64];
    std::snprintf(delta, sizeof(delta), "%.9g", reply.convergence_delta);
    AddHeader(*writer, "Content-Disposition", "attachment; filename=\"returned_gradients.gzip\"");
    AddHeader(*writer, "X-Convergence-Delta", delta);
    std::snprintf(delta, sizeof(delta), "%.6f", reply.compute_seconds);
    AddHeader(*writer, "X-Compute-Seconds", delta);
    writer->send(Code::Ok, reply.payload, kGzip);
  };
  Status submitted = broker_.Submit(std::move(job));
  if (!submitted.ok()) SendError(*writer, 503, submitted.message());
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
    return NotFoundError("no worker serves model '" + requested.substr(0, 64) + "'" +
                         (names.empty() ? std::string(" (no worker is ready)") : "; served: " + list()));
  }
  // /model/: the original's single model: the one named "default", or the only one.
  if (std::find(names.begin(), names.end(), "default") != names.end()) return std::string("default");
  if (names.size() == 1) return names.front();
  if (names.empty()) return std::string();  // whichever worker announces itself first
  return InvalidError("several models are served (" + list() +
                      ") and none is named 'default': POST to "
                      "/models/NAME/model");
}

void HttpApi::GetModels(const Pistache::Rest::Request& request, ResponseWriter response) {
  if (!Authorized(request, response)) return;
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
  SendJson(response, 200, json{{"models", models}});
}

void HttpApi::GetHealth(const Pistache::Rest::Request&, ResponseWriter response) {
  SendJson(response, 200, json{{"status", "ok"}});
}

void HttpApi::GetReady(const Pistache::Rest::Request& request, ResponseWriter response) {
  if (!Authorized(request, response)) return;
  const auto workers = broker_.Workers();
  if (broker_.draining()) {
    SendError(response, 503, "the gateway is shutting down");
    return;
  }
  if (workers.empty()) {
    SendError(response, 503, "no worker is ready yet");
    return;
  }
  SendJson(response, 200, json{{"status", "ready"}, {"workers", workers.size()}});
}

void HttpApi::GetWorkers(const Pistache::Rest::Request& request, ResponseWriter response) {
  if (!Authorized(request, response)) return;
  json list = json::array();
  for (const WorkerSnapshot& w : broker_.Workers()) {
    list.push_back({{"id", w.id},
                    {"model", w.info.model},
                    {"family", w.info.family},
                    {"variant", w.info.variant},
                    {"device", w.info.device},
                    {"state", w.state},
                    {"requests_served", w.served}});
  }
  SendJson(response, 200, json{{"workers", list}, {"queue_depth", broker_.QueueDepth()}});
}

void HttpApi::NotFound(const Pistache::Rest::Request& request, ResponseWriter response) {
  if (!Authorized(request, response)) return;
  SendError(response, 404,
            "no route " + request.resource() +
                "; see README (POST /model/, GET /healthz, /readyz, "
                "/v1/workers)");
}

}  // namespace intgrads
