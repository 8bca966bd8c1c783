#include "gateway/routes.h"

extern "C" {
extern const char intgrads_openapi_begin[], intgrads_openapi_end[];
extern const char intgrads_docs_begin[], intgrads_docs_end[];
extern const char intgrads_index_begin[], intgrads_index_end[];
}

namespace intgrads {

const std::vector<RouteSpec>& HttpRoutes() {
  static const std::vector<RouteSpec> routes = {
      {"GET", "/"},
      {"POST", "/model/"},
      {"POST", "/models/{name}/model"},
      {"POST", "/v1/attributions"},
      {"POST", "/v1/models/{name}/attributions"},
      {"GET", "/v1/model"},
      {"GET", "/v1/models"},
      {"GET", "/v1/models/{name}"},
      {"GET", "/v1/workers"},
      {"GET", "/healthz"},
      {"GET", "/readyz"},
      {"GET", "/metrics"},
      {"GET", "/openapi.json"},
      {"GET", "/docs"},
  };
  return routes;
}

std::string RouterPath(const std::string& path) {
  std::string out;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '{') {
      out += ':';
    } else if (path[i] != '}') {
      out += path[i];
    }
  }
  // Pistache ignores a trailing slash: /model serves /model and /model/.
  if (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

std::string_view OpenApiDocument() {
  return {intgrads_openapi_begin, static_cast<size_t>(intgrads_openapi_end - intgrads_openapi_begin)};
}
std::string_view DocsPage() {
  return {intgrads_docs_begin, static_cast<size_t>(intgrads_docs_end - intgrads_docs_begin)};
}
std::string_view WebPage() {
  return {intgrads_index_begin, static_cast<size_t>(intgrads_index_end - intgrads_index_begin)};
}

}  // namespace intgrads
