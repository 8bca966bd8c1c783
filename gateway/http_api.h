// The gateway's HTTP side (Pistache): validates every request before any
// work reaches a worker, hands valid ones to the broker and answers when the
// broker calls back, so no HTTP thread ever waits on a worker. The routes
// are gateway/routes.h's table; docs/API.md and /openapi.json describe them:
//
//   POST /model/, /model    the original: JSON in, gzip'd torch.save dict out, for
//                           the model named "default" or the only one served
//   POST /models/NAME/model the same for the model workers announced as NAME
//   POST /v1/attributions   images as PNG/JPEG bodies, multipart uploads or JSON,
//                           one or several; the answer's format by Accept
//   GET  /v1/model, /v1/models, /v1/models/NAME   what is served
//   GET  /healthz, /readyz, /v1/workers, /metrics  the service's state
//   GET  /, /docs, /openapi.json                   the web page and the API's description
//   KServe v1, Open Inference Protocol v2, TorchServe  gateway/protocols.h
//
// Its code: gateway/http_api.cc (serving, the token, what is served and the
// service's state), gateway/attribution_routes.cc (the attributions) and
// gateway/protocol_routes.cc (the protocols' routes).
#pragma once

#include <pistache/endpoint.h>
#include <pistache/router.h>

#include <memory>
#include <string>

#include "common/attributions.h"
#include "common/request.h"
#include "gateway/broker.h"
#include "gateway/decode_pool.h"
#include "gateway/gathering.h"
#include "gateway/metrics.h"
#include "gateway/request_head.h"
#include "gateway/routes.h"

namespace intgrads {

struct HttpOptions {
  std::string host = "localhost";
  uint16_t port = 8888;
  int threads = 2;
  size_t max_body_bytes = size_t{32} * 1024 * 1024;
  int request_timeout_ms = 300000;  // a request's deadline, waiting and computing
  int client_timeout_ms = 30000;    // for a client to send a request's head and body
  std::string token;                // when set, every route not marked open needs "Authorization: Bearer <token>"
  RequestLimits limits;
  int max_images = 16;                                     // images in one /v1/attributions request
  int64_t max_request_pixels = int64_t{16} * 1024 * 1024;  // pixels of all of one request's images
  // Request bodies are read and their images decoded on `decode_threads`
  // threads (DecodePool), within `decode_memory_bytes` for all requests at
  // once: what their bodies take while read, and their pixels until answered.
  int decode_threads = 2;
  uint64_t decode_memory_bytes = uint64_t{512} << 20;
  // A streamed answer's progress events carry the IG so far until they
  // have carried this many bytes of it; later ones the counts alone, so
  // that a client that reads slowly cannot make the gateway hold more.
  int64_t max_stream_ig_bytes = int64_t{8} << 20;
};

class Exchange;
class ClientTimer;

class HttpApi {
 public:
  HttpApi(Broker& broker, HttpOptions options);
  ~HttpApi();
  // Binds and serves on background threads; returns the port bound.
  StatusOr<uint16_t> Start();
  void Shutdown();

  // How RunAttributions answers.
  struct RunOptions {
    std::string accept;    // the /v1 answer's format, by Accept
    std::string model;     // named by the route's path; else the request's, or the default
    bool predict = false;  // the forward pass alone (JobRequest::predict)
    Renderer render;       // a protocol's answer from the replies; unset: the /v1 answer
    // "sse" or "ndjson": the /v1 answer streamed, after the passes' progress
    // (Accept: text/event-stream or application/x-ndjson); "": as one answer.
    std::string stream;
  };

 private:
  using Request = Pistache::Rest::Request;
  using Handler = void (HttpApi::*)(const Request&, const std::shared_ptr<Exchange>&);
  // gateway/attribution_routes.cc
  void PostModel(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void PostAttributions(const Request& request, const std::shared_ptr<Exchange>& exchange);
  // gateway/protocol_routes.cc
  void KServeV1(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void V2Server(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void V2Live(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void V2Ready(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void V2Model(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void V2ModelReady(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void V2Infer(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void TorchServeExplain(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void TorchServePredict(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void TorchServePing(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void TorchServe(const Request& request, const std::shared_ptr<Exchange>& exchange, bool predict);
  // gateway/http_api.cc
  void GetModel(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void GetModels(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void GetHealth(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void GetReady(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void GetWorkers(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void GetMetrics(const Request& request, const std::shared_ptr<Exchange>& exchange);
  void GetPage(const Request& request, const std::shared_ptr<Exchange>& exchange);
  // The member function a route's RouteSpec::handler names.
  static Handler HandlerFor(RouteHandler handler);
  // A request no route of its method serves: 405 (with Allow) when another
  // method's route serves its path, else 404; in JSON, as every answer.
  void NoRoute(const Request& request, const std::shared_ptr<Exchange>& exchange);
  // The original's request once off the I/O thread (DecodePool).
  void AnswerModel(const std::shared_ptr<Exchange>& exchange, const std::string& name, const std::string& body);
  // A request's inputs as jobs, one per image (or tensor), answered together
  // once the last reply is in: the /v1 answer, or run.render's. Runs on the
  // decode pool: decodes the images, checks the classes, submits.
  void RunAttributions(const std::shared_ptr<Exchange>& exchange, AttributionsRequest request, const RunOptions& run);
  AttributionLimits Limits() const;
  // The worker that serves `model` (a name the broker knows), if one does.
  std::optional<WorkerInfo> ModelInfo(const std::string& model) const;
  // The same, or why none: the name's refusal (ResolveModel), else not found.
  StatusOr<WorkerInfo> ServedModel(const std::string& model) const;
  // `bytes` of the decode pool's budget; nullptr (and a 503 sent) when it is spent.
  std::shared_ptr<DecodePool::Reservation> Reserve(uint64_t bytes, Exchange& exchange);
  // Runs `work` on the decode pool with `bytes` of its budget held meanwhile;
  // false (and a 503 sent) when the budget is spent or the queue is full.
  bool Offload(const std::shared_ptr<Exchange>& exchange, uint64_t bytes, std::function<void()> work);
  StatusOr<std::string> ResolveModel(const std::string& requested) const;
  // Whether an Authorization header's value lets a request in.
  bool TokenAccepted(std::string_view authorization) const;
  // False (and a 401 sent) when a token is set and the request lacks it.
  bool Authorized(const Pistache::Rest::Request& request, Exchange& exchange) const;
  bool BodyWithinLimit(const std::string& body, Exchange& exchange) const;
  // RequestGuard's refusal of a request from its head alone (a body over the
  // limit, a Content-Length that cannot be trusted).
  Pistache::Async::Promise<ssize_t> RefuseRequest(const RequestHead& head, int status, const std::string& message,
                                                  Pistache::Http::ResponseWriter writer);

  Broker& broker_;
  HttpOptions options_;
  Metrics metrics_;
  std::shared_ptr<ClientTimer> client_timer_;
  std::unique_ptr<DecodePool> decode_;
  Pistache::Rest::Router router_;
  std::unique_ptr<Pistache::Http::Endpoint> endpoint_;
};

// The HTTP status for a Status a user caused.
int HttpStatusOf(const Status& status);

}  // namespace intgrads
