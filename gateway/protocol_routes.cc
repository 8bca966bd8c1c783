// The routes of the protocols our users' serving tools speak (KServe v1,
// the Open Inference Protocol v2, TorchServe): each translates its request
// (gateway/protocols.h), runs it as /v1 runs its own (RunAttributions) and
// translates the replies back.
#include <memory>
#include <string>

#include "gateway/exchange.h"
#include "gateway/http_api.h"
#include "gateway/protocols.h"
#include "gateway/routes.h"

namespace intgrads {

using nlohmann::json;

namespace {

// The model named by a route's {name} segment, its verb (":explain") left off.
std::string ModelParameter(const Pistache::Rest::Request& request, std::string_view method) {
  const RouteSpec* route = FindRoute(method, request.resource());
  const std::string segment = request.hasParam(":name") ? request.param(":name").as<std::string>() : "";
  return route != nullptr ? ParameterOf(route->path, segment) : segment;
}

}  // namespace

std::optional<WorkerInfo> HttpApi::ModelInfo(const std::string& model) const {
  for (const WorkerSnapshot& w : broker_.Workers()) {
    if (w.info.model == model) return w.info;
  }
  return std::nullopt;
}

StatusOr<WorkerInfo> HttpApi::ServedModel(const std::string& model) const {
  if (std::optional<WorkerInfo> info = ModelInfo(model)) return *std::move(info);
  const StatusOr<std::string> resolved = ResolveModel(model);
  if (!resolved.ok()) return resolved.status();
  return NotFoundError("no worker serves model '" + model + "'");
}

void HttpApi::KServeV1(const Request& request, const std::shared_ptr<Exchange>& exchange) {
  auto body = std::make_shared<std::string>(TakeBody(request));
  if (!BodyWithinLimit(*body, *exchange)) return;
  RunOptions run;
  run.model = ModelParameter(request, "POST");
  const bool explain = RouteOf("POST", request.resource()) == "/v1/models/{name}:explain";
  run.predict = !explain;
  run.render = [explain](const Gathering& g) { return KServeAnswer(g, explain); };
  Offload(exchange, body->size() * kJsonMemoryFactor, [this, exchange, body, run] {
    StatusOr<std::string> translated = KServeRequestBody(*body);
    StatusOr<AttributionsRequest> parsed = translated.ok()
                                               ? ReadAttributionsRequest("application/json", {}, *translated, Limits())
                                               : StatusOr<AttributionsRequest>(translated.status());
    if (!parsed.ok()) {
      exchange->Error(HttpStatusOf(parsed.status()), parsed.status().message());
      return;
    }
    RunAttributions(exchange, std::move(parsed).value(), run);
  });
}

void HttpApi::V2Server(const Request&, const std::shared_ptr<Exchange>& exchange) {
  exchange->Json(200, ServerMetadata());
}

void HttpApi::V2Live(const Request&, const std::shared_ptr<Exchange>& exchange) {
  exchange->Json(200, json{{"live", true}});
}

// Not ready is a 4xx in the protocol (its "health" section): 400.
void HttpApi::V2Ready(const Request&, const std::shared_ptr<Exchange>& exchange) {
  if (broker_.draining() || broker_.Workers().empty()) {
    exchange->Json(400,
                   json{{"ready", false},
                        {"error", broker_.draining() ? "the gateway is shutting down" : "no worker is ready yet"}});
    return;
  }
  exchange->Json(200, json{{"ready", true}});
}

void HttpApi::V2ModelReady(const Request& request, const std::shared_ptr<Exchange>& exchange) {
  const std::string name = ModelParameter(request, "GET");
  if (broker_.draining() || !ModelInfo(name)) {
    exchange->Json(400, json{{"name", name}, {"ready", false}, {"error", "no worker serves model '" + name + "'"}});
    return;
  }
  exchange->Json(200, json{{"name", name}, {"ready", true}});
}

void HttpApi::V2Model(const Request& request, const std::shared_ptr<Exchange>& exchange) {
  const std::string name = ModelParameter(request, "GET");
  const StatusOr<WorkerInfo> info = ServedModel(name);
  if (!info.ok()) {
    exchange->Error(HttpStatusOf(info.status()), info.status().message());
    return;
  }
  exchange->Json(200, ModelMetadata(*info));
}

void HttpApi::V2Infer(const Request& request, const std::shared_ptr<Exchange>& exchange) {
  auto body = std::make_shared<std::string>(TakeBody(request));
  if (!BodyWithinLimit(*body, *exchange)) return;
  const std::string name = ModelParameter(request, "POST");
  // Its numbers as floats, its images' bytes: each under the JSON's text.
  Offload(exchange, body->size() * kJsonMemoryFactor, [this, exchange, body, name] {
    const StatusOr<WorkerInfo> info = ServedModel(name);
    if (!info.ok()) {
      exchange->Error(HttpStatusOf(info.status()), info.status().message());
      return;
    }
    StatusOr<InferRequest> infer = ParseInferRequest(*body, info->input_size);
    if (!infer.ok()) {
      exchange->Error(HttpStatusOf(infer.status()), infer.status().message());
      return;
    }
    auto shared = std::make_shared<InferRequest>(std::move(infer).value());
    StatusOr<AttributionsRequest> parsed = ReadGivenInputs(shared->options, std::move(shared->inputs), Limits());
    if (!parsed.ok()) {
      exchange->Error(HttpStatusOf(parsed.status()), parsed.status().message());
      return;
    }
    RunOptions run;
    run.model = name;
    run.predict = !shared->explain;
    run.render = [shared, name](const Gathering& g) { return InferAnswer(name, *shared, g); };
    RunAttributions(exchange, std::move(parsed).value(), run);
  });
}

void HttpApi::TorchServeExplain(const Request& request, const std::shared_ptr<Exchange>& exchange) {
  TorchServe(request, exchange, /*predict=*/false);
}

void HttpApi::TorchServePredict(const Request& request, const std::shared_ptr<Exchange>& exchange) {
  TorchServe(request, exchange, /*predict=*/true);
}

void HttpApi::TorchServe(const Request& request, const std::shared_ptr<Exchange>& exchange, bool predict) {
  auto body = std::make_shared<std::string>(TakeBody(request));
  QueryParams query;
  if (!BodyWithinLimit(*body, *exchange) || !ReadQuery(request, *exchange, &query)) return;
  const std::string content_type = HeaderText<Pistache::Http::Header::ContentType>(request);
  RunOptions run;
  run.model = ModelParameter(request, Pistache::Http::methodString(request.method()));
  run.predict = predict;
  run.render = [predict](const Gathering& g) { return TorchServeAnswer(g, !predict); };
  Offload(exchange, body->size() * kJsonMemoryFactor, [this, exchange, body, query, content_type, run] {
    auto parsed = ReadAttributionsRequest(content_type, query, *body, Limits());
    if (!parsed.ok()) {
      exchange->Error(HttpStatusOf(parsed.status()), parsed.status().message());
      return;
    }
    RunAttributions(exchange, std::move(parsed).value(), run);
  });
}

// TorchServe's health: 200 Healthy with a worker, else 500 Unhealthy.
void HttpApi::TorchServePing(const Request&, const std::shared_ptr<Exchange>& exchange) {
  const bool healthy = !broker_.draining() && !broker_.Workers().empty();
  exchange->Json(healthy ? 200 : 500, json{{"status", healthy ? "Healthy" : "Unhealthy"}});
}

}  // namespace intgrads
