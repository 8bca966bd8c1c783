// The gateway's routes as one table, and the files it serves, without
// Pistache: HttpApi registers exactly these, openapi.json describes exactly
// these, and tests/gateway/routes_test.cc holds the two together.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace intgrads {

struct RouteSpec {
  std::string method;  // "GET" | "POST"
  std::string path;    // OpenAPI form: /v1/models/{name}/attributions
  bool open = false;   // answered without the token: the pages and health (liveness, readiness)
};

const std::vector<RouteSpec>& HttpRoutes();

// Pistache's form of a path: {name} -> :name, no trailing slash.
std::string RouterPath(const std::string& path);

// The route (its path as in HttpRoutes) that serves a request line's method
// and target, or "(none)": what the metrics count a request under when it
// is answered before Pistache's router has seen it.
std::string RouteOf(std::string_view method, std::string_view target);

// Files compiled into the gateway (gateway/web/).
std::string_view OpenApiDocument();  // openapi.json
std::string_view DocsPage();         // docs.html: renders openapi.json
std::string_view WebPage();          // index.html: the page at /

}  // namespace intgrads
