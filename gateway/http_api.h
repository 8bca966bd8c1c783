// The gateway's HTTP side (Pistache): validates every request before any
// work reaches a worker, hands valid ones to the broker and answers when the
// broker calls back, so no HTTP thread ever waits on a worker.
//
//   POST /model/, /model   the original: JSON in, gzip'd torch.save dict out, for
//                          the model named "default" or the only one served
//   POST /models/NAME/model the same for the model workers announced as NAME
//   GET  /v1/models        the models served
//   GET  /healthz          the gateway is up
//   GET  /readyz           at least one worker is ready (503 before)
//   GET  /v1/workers       the worker pool
#pragma once

#include <pistache/endpoint.h>
#include <pistache/router.h>

#include <memory>
#include <string>

#include "common/request.h"
#include "gateway/broker.h"

namespace intgrads {

struct HttpOptions {
  std::string host = "localhost";
  uint16_t port = 8888;
  int threads = 2;
  size_t max_body_bytes = 32 * 1024 * 1024;
  int request_timeout_ms = 300000;  // a request's deadline, waiting and computing
  std::string token;                // when set, every route but /healthz needs "Authorization: Bearer <token>"
  RequestLimits limits;
};

class HttpApi {
 public:
  HttpApi(Broker& broker, HttpOptions options);
  // Binds and serves on background threads; returns the port bound.
  StatusOr<uint16_t> Start();
  void Shutdown();

 private:
  void PostModel(const Pistache::Rest::Request& request, Pistache::Http::ResponseWriter response);
  void GetModels(const Pistache::Rest::Request& request, Pistache::Http::ResponseWriter response);
  void GetHealth(const Pistache::Rest::Request& request, Pistache::Http::ResponseWriter response);
  StatusOr<std::string> ResolveModel(const std::string& requested) const;
  // False (and a 401 sent) when a token is set and the request lacks it.
  bool Authorized(const Pistache::Rest::Request& request, Pistache::Http::ResponseWriter& response);
  void GetReady(const Pistache::Rest::Request& request, Pistache::Http::ResponseWriter response);
  void GetWorkers(const Pistache::Rest::Request& request, Pistache::Http::ResponseWriter response);
  void NotFound(const Pistache::Rest::Request& request, Pistache::Http::ResponseWriter response);

  Broker& broker_;
  HttpOptions options_;
  Pistache::Rest::Router router_;
  std::unique_ptr<Pistache::Http::Endpoint> endpoint_;
};

// The HTTP status for a Status a user caused.
int HttpStatusOf(const Status& status);

}  // namespace intgrads
