// The gateway's routes as one table, and the files it serves, without
// Pistache: HttpApi registers exactly these, openapi.json describes exactly
// these, and tests/gateway/routes_test.cc holds the two together.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace intgrads {

// What answers a route: one of HttpApi's handlers (gateway/http_api.h,
// HandlerFor; one handler may serve several routes).
enum class RouteHandler {
  kPage,          // /, /docs, /openapi.json
  kModel,         // the original's POST /model/
  kAttributions,  // POST /v1/attributions
  kModelInfo,
  kModels,
  kWorkers,
  kHealth,
  kReady,
  kMetrics,
  kKServeV1,
  kV2Server,
  kV2Live,
  kV2Ready,
  kV2Model,
  kV2ModelReady,
  kV2Infer,
  kTorchServeExplain,
  kTorchServePredict,
  kTorchServePing,
};

struct RouteSpec {
  std::string method;  // "GET" | "POST" | "PUT"
  // OpenAPI form: /v1/models/{name}/attributions; a segment may end in a
  // verb after its parameter, as KServe's /v1/models/{name}:explain.
  std::string path;
  RouteHandler handler = RouteHandler::kPage;
  bool open = false;  // answered without the token: the pages and health (liveness, readiness)
};

const std::vector<RouteSpec>& HttpRoutes();

// Pistache's form of a path: {name} -> :name, no trailing slash. A verb
// after a parameter is left off ({name}:explain -> :name): Pistache matches
// whole segments, and FindRoute tells such routes apart.
std::string RouterPath(const std::string& path);

// The route that serves a request line's method and target, or nullptr.
const RouteSpec* FindRoute(std::string_view method, std::string_view target);
// Its path as in HttpRoutes, or "(none)": what the metrics count a request
// under (also one answered before Pistache's router has seen it).
std::string RouteOf(std::string_view method, std::string_view target);

// The value of a path's parameter segment, its verb left off:
// "resnet:explain" -> "resnet" for {name}:explain; `segment` itself otherwise.
std::string ParameterOf(std::string_view route_path, std::string_view segment);

// Files compiled into the gateway (gateway/web/).
std::string_view OpenApiDocument();  // openapi.json as written
// An OpenAPI document with every list of a request word (a parameter's or
// a body field's enum named method, format, baseline, heatmap, sign or
// regions) and the attribution routes' answer media types taken from their
// tables (common/vocabulary.h), so that it names what the code accepts.
std::string WithWordLists(std::string_view openapi);
// openapi.json as /openapi.json serves it: WithWordLists of the file, made once.
const std::string& ServedOpenApiDocument();
std::string_view DocsPage();  // docs.html: renders openapi.json
std::string_view WebPage();   // index.html: the page at /

}  // namespace intgrads
