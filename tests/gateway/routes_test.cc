// openapi.json against the code: the routes the gateway registers, the
// parameters its parser reads, its formats and methods. Neither can change
// without the other.
#include "gateway/routes.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/attributions.h"
#include "gateway/metrics.h"

namespace intgrads {
namespace {

using nlohmann::json;

json Spec() { return json::parse(OpenApiDocument()); }

// A "$ref" of the document followed to what it names.
const json& Resolve(const json& spec, const json& item) {
  if (!item.contains("$ref")) return item;
  return spec.at(json::json_pointer(item["$ref"].get<std::string>().substr(1)));
}

TEST(OpenApi, DescribesExactlyTheRoutesServed) {
  std::set<std::pair<std::string, std::string>> served, described;
  for (const RouteSpec& r : HttpRoutes()) served.insert({r.method, r.path});
  const json spec = Spec();
  for (const auto& [path, item] : spec["paths"].items()) {
    for (const auto& [method, operation] : item.items()) {
      std::string upper = method;
      for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      described.insert({upper, path});
      EXPECT_TRUE(operation.contains("responses")) << path;
    }
  }
  EXPECT_EQ(served, described);
}

TEST(OpenApi, AttributionParametersAndMediaTypesMatchTheCode) {
  const json spec = Spec();
  const json& post = spec["paths"]["/v1/attributions"]["post"];
  std::vector<std::string> parameters;
  for (const json& p : post["parameters"]) parameters.push_back(Resolve(spec, p)["name"]);
  EXPECT_EQ(parameters, AttributionParameters());
  // (Their lists of words: EveryWordListIsItsTables.)
  std::set<std::string> answered;
  for (const auto& [type, body] : post["responses"]["200"]["content"].items()) answered.insert(type);
  for (const PayloadFormat& f : PayloadFormats()) {
    EXPECT_EQ(answered.count(std::string(f.content_type)), 1U) << f.content_type;
  }
  EXPECT_EQ(answered.count("application/zip"), 1U);
  // The name-scoped route takes the same parameters, the model's name in its path for ?model=.
  const json& scoped = spec["paths"]["/v1/models/{name}/attributions"]["post"];
  std::vector<std::string> scoped_parameters;
  for (const json& p : scoped["parameters"]) scoped_parameters.push_back(Resolve(spec, p)["name"]);
  std::vector<std::string> expected = parameters;
  expected.erase(std::find(expected.begin(), expected.end(), "model"));
  expected.insert(expected.begin(), "name");
  EXPECT_EQ(scoped_parameters, expected);
}

// Generated clients name their calls by operationId and group them by tag;
// the routes open without the token say so (security: []), the others
// inherit the bearer scheme.
// Every list of words in the document, a parameter's or a body field's, is
// its table's (common/vocabulary.h), in the table's order: in the file as
// written, and as served (ServedOpenApiDocument fills them in from the tables).
TEST(OpenApi, EveryWordListIsItsTables) {
  const std::map<std::string, std::vector<std::string>> tables = {
      {"method", NamesOf<Method>()},   {"format", NamesOf<Format>()}, {"baseline", NamesOf<Baseline>()},
      {"heatmap", NamesOf<Heatmap>()}, {"sign", NamesOf<Sign>()},     {"regions", NamesOf<RegionKind>()}};
  std::map<std::string, int> seen;
  std::function<void(const json&, const std::string&)> walk = [&](const json& node, const std::string& where) {
    if (node.is_array()) {
      for (const json& item : node) walk(item, where);
      return;
    }
    if (!node.is_object()) return;
    auto check = [&](const std::string& word, const json& schema) {
      const auto table = tables.find(word);
      if (table == tables.end() || !schema.is_object() || !schema.contains("enum")) return;
      EXPECT_EQ(schema["enum"].get<std::vector<std::string>>(), table->second) << where << " " << word;
      ++seen[word];
    };
    if (node.contains("name") && node["name"].is_string() && node.contains("schema")) {
      check(node["name"].get<std::string>(), node["schema"]);
    }
    if (node.contains("properties") && node["properties"].is_object()) {
      for (const auto& [word, schema] : node["properties"].items()) check(word, schema);
    }
    for (const auto& [key, child] : node.items()) walk(child, std::string(where).append("/").append(key));
  };
  walk(Spec(), "");
  for (const auto& [word, names] : tables) EXPECT_GE(seen[word], 1) << word << " is listed nowhere";
  // What /openapi.json serves takes its lists from the tables; today the file says the same.
  const json served = json::parse(ServedOpenApiDocument());
  walk(served, "served");
  EXPECT_EQ(served, Spec());
}

// A stale list is served as its table says.
TEST(OpenApi, ServedListsComeFromTheTables) {
  const json stale = json::parse(R"({
    "paths": {"/v1/attributions": {"post": {
      "parameters": [{"name": "format", "in": "query", "schema": {"type": "string", "enum": ["gzip"]}},
                     {"name": "n_steps", "in": "query", "schema": {"type": "integer"}}],
      "responses": {"200": {"content": {"application/gzip": {"schema": {"type": "string"}}}}}}}},
    "components": {"schemas": {"Body": {"properties": {"method": {"type": "string", "enum": ["riemann_left"]},
                                                       "sign": {"type": "string"}}}}}})");
  const json served = json::parse(WithWordLists(stale.dump()));
  const json& post = served["paths"]["/v1/attributions"]["post"];
  EXPECT_EQ(post["parameters"][0]["schema"]["enum"].get<std::vector<std::string>>(), NamesOf<Format>());
  EXPECT_FALSE(post["parameters"][1]["schema"].contains("enum"));
  const json& properties = served["components"]["schemas"]["Body"]["properties"];
  EXPECT_EQ(properties["method"]["enum"].get<std::vector<std::string>>(), NamesOf<Method>());
  EXPECT_FALSE(properties["sign"].contains("enum"));  // a field without a list gets none
  EXPECT_EQ(post["responses"]["200"]["content"]["application/gzip"]["schema"]["type"], "string");  // kept
  for (const PayloadFormat& f : PayloadFormats()) {
    EXPECT_TRUE(post["responses"]["200"]["content"].contains(std::string(f.content_type))) << f.content_type;
  }
}

TEST(OpenApi, OperationsAreNamedTaggedAndSecuredAsServed) {
  const json spec = Spec();
  EXPECT_EQ(spec["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
  EXPECT_EQ(spec["security"], json::parse(R"([{"bearerAuth": []}])"));
  std::set<std::string> ids, tags;
  for (const json& tag : spec["tags"]) tags.insert(tag["name"].get<std::string>());
  for (const RouteSpec& r : HttpRoutes()) {
    std::string method = r.method;
    for (char& c : method) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const json& operation = spec["paths"][r.path][method];
    ASSERT_TRUE(operation.contains("operationId")) << r.path;
    EXPECT_TRUE(ids.insert(operation["operationId"].get<std::string>()).second) << r.path;
    ASSERT_EQ(operation["tags"].size(), 1U) << r.path;
    EXPECT_EQ(tags.count(operation["tags"][0].get<std::string>()), 1U) << r.path;
    EXPECT_EQ(operation.contains("security") && operation["security"].empty(), r.open) << r.path;
    EXPECT_EQ(operation["responses"].contains("401"), !r.open) << r.path;
  }
}

TEST(OpenApi, RouterPathsArePistaches) {
  EXPECT_EQ(RouterPath("/v1/models/{name}/attributions"), "/v1/models/:name/attributions");
  EXPECT_EQ(RouterPath("/model/"), "/model");
  EXPECT_EQ(RouterPath("/"), "/");
  EXPECT_EQ(RouterPath("/v1/models/{name}:explain"), "/v1/models/:name");  // Pistache matches whole segments
  EXPECT_EQ(ParameterOf("/v1/models/{name}:explain", "cifar:explain"), "cifar");
  EXPECT_EQ(ParameterOf("/v1/models/{name}/attributions", "cifar"), "cifar");
  EXPECT_NE(DocsPage().find("openapi.json"), std::string_view::npos);
  EXPECT_NE(WebPage().find("/v1/attributions"), std::string_view::npos);
}

TEST(Metrics, RendersPrometheusText) {
  Metrics metrics;
  metrics.Record("/v1/attributions", 200, 0.3);
  metrics.Record("/v1/attributions", 200, 7.0);
  metrics.Record("/model/", 422, 0.001);
  metrics.AddAttribution(50);
  metrics.AddAttribution(16);
  metrics.RecordStages({{"queue", 0.0002}, {"attribute", 0.08}});
  metrics.RecordStages({{"queue", 0.03}, {"attribute", 0.12}});
  WorkerSnapshot w;
  w.info.model = "default";
  w.state = "busy";
  const std::string text = metrics.Render({w}, 3);
  auto has = [&text](const std::string& line) { return text.find(line + "\n") != std::string::npos; };
  EXPECT_TRUE(has("intgrads_http_requests_total{route=\"/v1/attributions\",status=\"200\"} 2")) << text;
  EXPECT_TRUE(has("intgrads_http_requests_total{route=\"/model/\",status=\"422\"} 1"));
  EXPECT_TRUE(has("intgrads_http_request_duration_seconds_bucket{route=\"/v1/attributions\",le=\"0.5\"} 1"));
  EXPECT_TRUE(has("intgrads_http_request_duration_seconds_bucket{route=\"/v1/attributions\",le=\"10\"} 2"));
  EXPECT_TRUE(has("intgrads_http_request_duration_seconds_bucket{route=\"/v1/attributions\",le=\"+Inf\"} 2"));
  EXPECT_TRUE(has("intgrads_http_request_duration_seconds_count{route=\"/v1/attributions\"} 2"));
  EXPECT_TRUE(has("intgrads_path_steps_total 66"));
  EXPECT_TRUE(has("intgrads_stage_seconds_bucket{stage=\"queue\",le=\"0.0005\"} 1"));
  EXPECT_TRUE(has("intgrads_stage_seconds_bucket{stage=\"queue\",le=\"0.05\"} 2"));
  EXPECT_TRUE(has("intgrads_stage_seconds_bucket{stage=\"attribute\",le=\"0.1\"} 1"));
  EXPECT_TRUE(has("intgrads_stage_seconds_sum{stage=\"attribute\"} 0.2"));
  EXPECT_TRUE(has("intgrads_stage_seconds_count{stage=\"queue\"} 2"));
  EXPECT_TRUE(has("intgrads_queue_depth 3"));
  EXPECT_TRUE(has("intgrads_workers{model=\"default\",state=\"busy\"} 1"));
  EXPECT_TRUE(has("intgrads_workers{model=\"default\",state=\"idle\"} 0"));
}

TEST(Routes, RouteOfARequestLineMatchesTheTable) {
  EXPECT_EQ(RouteOf("POST", "/model/"), "/model/");
  EXPECT_EQ(RouteOf("POST", "/model"), "/model/");
  EXPECT_EQ(RouteOf("POST", "/models/bit-m-r50x1/model?x=1"), "/models/{name}/model");
  EXPECT_EQ(RouteOf("POST", "/v1/models/lanet/attributions"), "/v1/models/{name}/attributions");
  EXPECT_EQ(RouteOf("GET", "/v1/models/lanet"), "/v1/models/{name}");
  EXPECT_EQ(RouteOf("GET", "/"), "/");
  EXPECT_EQ(RouteOf("GET", "/model/"), "(none)");
  EXPECT_EQ(RouteOf("POST", "/v1/models/lanet:explain"), "/v1/models/{name}:explain");
  EXPECT_EQ(RouteOf("POST", "/v1/models/lanet:predict"), "/v1/models/{name}:predict");
  EXPECT_EQ(RouteOf("POST", "/v1/models/lanet:train"), "(none)");
  EXPECT_EQ(RouteOf("POST", "/v1/models/:explain"), "(none)");  // no name before the verb
  EXPECT_EQ(RouteOf("PUT", "/predictions/lanet"), "/predictions/{name}");
  EXPECT_EQ(RouteOf("GET", "/v2/models/lanet/ready"), "/v2/models/{name}/ready");
  EXPECT_EQ(RouteOf("POST", "/models//model"), "(none)");
  EXPECT_EQ(RouteOf("", ""), "(none)");
}

}  // namespace
}  // namespace intgrads
