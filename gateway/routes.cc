#include "gateway/routes.h"

#include <algorithm>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "common/vocabulary.h"

extern "C" {
extern const char intgrads_openapi_begin[], intgrads_openapi_end[];
extern const char intgrads_docs_begin[], intgrads_docs_end[];
extern const char intgrads_index_begin[], intgrads_index_end[];
}

namespace intgrads {

const std::vector<RouteSpec>& HttpRoutes() {
  static const std::vector<RouteSpec> routes = {
      {"GET", "/", RouteHandler::kPage, true},
      {"POST", "/model/", RouteHandler::kModel},
      {"POST", "/models/{name}/model", RouteHandler::kModel},
      {"POST", "/v1/attributions", RouteHandler::kAttributions},
      {"POST", "/v1/models/{name}/attributions", RouteHandler::kAttributions},
      {"GET", "/v1/model", RouteHandler::kModelInfo},
      {"GET", "/v1/models", RouteHandler::kModels},
      {"GET", "/v1/models/{name}", RouteHandler::kModelInfo},
      {"GET", "/v1/workers", RouteHandler::kWorkers},
      {"GET", "/healthz", RouteHandler::kHealth, true},
      {"GET", "/readyz", RouteHandler::kReady, true},
      {"GET", "/metrics", RouteHandler::kMetrics},
      {"GET", "/openapi.json", RouteHandler::kPage, true},
      {"GET", "/docs", RouteHandler::kPage, true},
      // KServe v1
      {"POST", "/v1/models/{name}:explain", RouteHandler::kKServeV1},
      {"POST", "/v1/models/{name}:predict", RouteHandler::kKServeV1},
      // Open Inference Protocol v2
      {"GET", "/v2", RouteHandler::kV2Server},
      {"GET", "/v2/health/live", RouteHandler::kV2Live, true},
      {"GET", "/v2/health/ready", RouteHandler::kV2Ready, true},
      {"GET", "/v2/models/{name}", RouteHandler::kV2Model},
      {"GET", "/v2/models/{name}/ready", RouteHandler::kV2ModelReady, true},
      {"POST", "/v2/models/{name}/infer", RouteHandler::kV2Infer},
      // TorchServe (curl -T sends PUT)
      {"POST", "/explanations/{name}", RouteHandler::kTorchServeExplain},
      {"PUT", "/explanations/{name}", RouteHandler::kTorchServeExplain},
      {"POST", "/predictions/{name}", RouteHandler::kTorchServePredict},
      {"PUT", "/predictions/{name}", RouteHandler::kTorchServePredict},
      {"GET", "/ping", RouteHandler::kTorchServePing, true},
  };
  return routes;
}

std::string RouterPath(const std::string& path) {
  std::string out;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '{') {
      out += ':';
    } else if (path[i] == '}') {
      while (i + 1 < path.size() && path[i + 1] != '/') ++i;  // a verb after the parameter
    } else {
      out += path[i];
    }
  }
  // Pistache ignores a trailing slash: /model serves /model and /model/.
  if (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

namespace {

// A path's segments, the query and a trailing slash left off.
std::vector<std::string_view> Segments(std::string_view path) {
  path = path.substr(0, path.find('?'));
  std::vector<std::string_view> segments;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    const size_t end = std::min(path.find('/'), path.size());
    segments.push_back(path.substr(0, end));
    path.remove_prefix(end);
  }
  return segments;
}

}  // namespace

namespace {

// Whether a request's segment fills a route's: the same text, or any text
// for a parameter ({name}), or any text ending in the verb ({name}:explain).
bool Fills(std::string_view pattern, std::string_view segment) {
  if (pattern.empty() || pattern.front() != '{') return pattern == segment;
  const std::string_view verb = pattern.substr(pattern.find('}') + 1);
  return segment.size() > verb.size() && segment.substr(segment.size() - verb.size()) == verb;
}

}  // namespace

const RouteSpec* FindRoute(std::string_view method, std::string_view target) {
  const std::vector<std::string_view> requested = Segments(target);
  for (const RouteSpec& route : HttpRoutes()) {
    if (route.method != method) continue;
    const std::vector<std::string_view> pattern = Segments(route.path);
    if (pattern.size() != requested.size()) continue;
    bool same = true;
    for (size_t i = 0; i < pattern.size() && same; ++i) same = Fills(pattern[i], requested[i]);
    if (same) return &route;
  }
  return nullptr;
}

std::string RouteOf(std::string_view method, std::string_view target) {
  const RouteSpec* route = FindRoute(method, target);
  return route != nullptr ? route->path : "(none)";
}

std::string ParameterOf(std::string_view route_path, std::string_view segment) {
  const size_t close = route_path.find('}');
  if (close == std::string_view::npos) return std::string(segment);
  const size_t end = std::min(route_path.find('/', close), route_path.size());
  const size_t verb = end - close - 1;
  return std::string(segment.substr(0, segment.size() >= verb ? segment.size() - verb : 0));
}

std::string_view OpenApiDocument() {
  return {intgrads_openapi_begin, static_cast<size_t>(intgrads_openapi_end - intgrads_openapi_begin)};
}
std::string WithWordLists(std::string_view openapi) {
  using nlohmann::json;
  json document = json::parse(openapi, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return std::string(openapi);  // served as written
  const std::map<std::string, std::vector<std::string>> words = {
      {"method", NamesOf<Method>()},   {"format", NamesOf<Format>()}, {"baseline", NamesOf<Baseline>()},
      {"heatmap", NamesOf<Heatmap>()}, {"sign", NamesOf<Sign>()},     {"regions", NamesOf<RegionKind>()}};
  auto fill = [&words](const std::string& word, json& schema) {
    const auto names = words.find(word);
    if (names != words.end() && schema.is_object() && schema.contains("enum")) schema["enum"] = names->second;
  };
  std::function<void(json&)> walk = [&](json& node) {
    if (node.is_object()) {
      if (node.contains("name") && node["name"].is_string() && node.contains("schema")) {
        fill(node["name"].get<std::string>(), node["schema"]);
      }
      if (node.contains("properties") && node["properties"].is_object()) {
        for (auto& [word, schema] : node["properties"].items()) fill(word, schema);
      }
    }
    if (node.is_structured()) {
      for (json& child : node) walk(child);
    }
  };
  walk(document);
  for (const char* path : {"/v1/attributions", "/v1/models/{name}/attributions"}) {
    if (!document.contains("paths") || !document["paths"].contains(path)) continue;
    json& content = document["paths"][path]["post"]["responses"]["200"]["content"];
    for (const PayloadFormat& f : PayloadFormats()) {
      if (!content.contains(std::string(f.content_type))) content[std::string(f.content_type)] = json::object();
    }
  }
  return document.dump(1);
}

const std::string& ServedOpenApiDocument() {
  static const std::string served = WithWordLists(OpenApiDocument());
  return served;
}

std::string_view DocsPage() {
  return {intgrads_docs_begin, static_cast<size_t>(intgrads_docs_end - intgrads_docs_begin)};
}
std::string_view WebPage() {
  return {intgrads_index_begin, static_cast<size_t>(intgrads_index_end - intgrads_index_begin)};
}

}  // namespace intgrads
