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
#pragma once

#include <pistache/endpoint.h>
#include <pistache/router.h>

#include <memory>
#include <string>

#include "common/attributions.h"
#include "common/request.h"
#include "gateway/broker.h"
#include "gateway/decode_pool.h"
#include "gateway/metrics.h"
#include "gateway/request_head.h"

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

 private:
  using Handler = void (HttpApi::*)(const Pistache::Rest::Request&, const std::shared_ptr<Exchange>&);
  void PostModel(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange);
  void PostAttributions(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange);
  void GetModel(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange);
  void GetModels(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange);
  void GetHealth(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange);
  void GetReady(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange);
  void GetWorkers(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange);
  void GetMetrics(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange);
  void GetPage(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange);
  Handler HandlerFor(const std::string& method, const std::string& path) const;
  // A request no route of its method serves: 405 (with Allow) when another
  // method's route serves its path, else 404; in JSON, as every answer.
  void NoRoute(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange);
  // The work of PostModel and PostAttributions once off the I/O thread (DecodePool).
  void AnswerModel(const std::shared_ptr<Exchange>& exchange, const std::string& name, const std::string& body);
  struct AttributionsCall;
  void AnswerAttributions(const std::shared_ptr<Exchange>& exchange, const AttributionsCall& call);
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
