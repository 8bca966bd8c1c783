// The protocols' translations, request and answer, each in the JSON its
// specification shows: KServe v1 (instances in, predictions and
// explanations out), the Open Inference Protocol v2 (tensors in and out,
// metadata) and TorchServe (top five classes, the IG as nested lists).
#include "gateway/protocols.h"

#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

namespace intgrads {
namespace {

using nlohmann::json;

// A worker's JSON attribution of one 1 x 1 input with 2 path points (format json).
std::string Attribution(int target, double delta) {
  return json{{"target_class", target},
              {"target_name", target == 0 ? "cat" : "dog"},
              {"predicted_class", 1},
              {"predicted_name", "dog"},
              {"probabilities", {0.25, 0.75}},
              {"classes", {"cat", "dog"}},
              {"convergence_delta", delta},
              {"method", "gausslegendre"},
              {"n_steps", 2},
              {"integrated_grads", {{{{0.5}}, {{1.5}}, {{2.5}}}}},
              {"integrated_directional_grads", {{{{1}}, {{2}}, {{3}}}, {{{4}}, {{5}}, {{6}}}}},
              {"step_sizes", {{0.5}, {0.5}}},
              {"intermediates", {{{{0}}, {{0}}, {{0}}}, {{{1}}, {{1}}, {{1}}}}},
              {"output", {{-1.0, 0.5}}},
              {"input", {{{{1}}, {{1}}, {{1}}}}}}
      .dump();
}

std::string Prediction() {
  return json{{"predicted_class", 1},
              {"predicted_name", "dog"},
              {"probabilities", {0.25, 0.75}},
              {"classes", {"cat", "dog"}},
              {"output", {{-1.0, 0.5}}}}
      .dump();
}

JobReply Reply(std::string payload) {
  JobReply reply;
  reply.payload = std::move(payload);
  reply.probabilities = {0.25, 0.75};
  reply.target = 1;
  return reply;
}

void Fill(Gathering* g, std::vector<JobReply> replies) {
  g->replies = std::move(replies);
  g->classes = {"cat", "dog"};
}

TEST(KServeV1, InstancesBecomeInputsWithTheParametersBeside) {
  const auto body = KServeRequestBody(R"({"instances": ["aGk=", {"b64": "aGk="}, {"image_bytes": {"b64": "aGk="}},
      {"image": "aGk=", "target": "cat"}, [[[1, 2, 3]]], {"b64": "aGk=", "target": 0}],
      "parameters": {"target": "dog", "n_steps": 8}})");
  ASSERT_TRUE(body.ok()) << body.status().message();
  const json doc = json::parse(*body);
  ASSERT_EQ(doc["inputs"].size(), 6U);
  EXPECT_EQ(doc["inputs"][5]["target"], 0);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(doc["inputs"][i]["image"], "aGk=") << i;
  EXPECT_EQ(doc["inputs"][4]["img_data"], json::parse("[[[1, 2, 3]]]"));
  EXPECT_EQ(doc["inputs"][0]["target"], "dog");  // the parameters' target for each
  EXPECT_EQ(doc["inputs"][3]["target"], "cat");  // an instance's own wins
  EXPECT_EQ(doc["n_steps"], 8);
  EXPECT_FALSE(doc.contains("target"));
  // "inputs" is KServe's other name for instances.
  EXPECT_TRUE(KServeRequestBody(R"({"inputs": ["aGk="]})").ok());
  EXPECT_EQ(KServeRequestBody("not json").status().code(), StatusCode::kMalformed);
  for (const char* bad : {R"({"instances": []})", R"({"instances": [3]})", R"({"instances": [{"x": 1}]})",
                          R"({"instances": ["aGk="], "parameters": 3})", "[1]"}) {
    EXPECT_EQ(KServeRequestBody(bad).status().code(), StatusCode::kInvalid) << bad;
  }
}

TEST(KServeV1, PredictionsAndExplanationsOnePerInstance) {
  Gathering g;
  JobReply two_classes = Reply(Attribution(1, 0.0));
  two_classes.others.push_back(Reply(Attribution(0, 0.0)));
  Fill(&g, {Reply(Attribution(1, -0.5)), std::move(two_classes)});
  const json explained = json::parse(KServeAnswer(g, /*explain=*/true).value());
  EXPECT_EQ(explained["predictions"], json::parse("[[0.25, 0.75], [0.25, 0.75]]"));
  ASSERT_EQ(explained["explanations"].size(), 2U);
  EXPECT_EQ(explained["explanations"][0]["convergence_delta"], -0.5);
  ASSERT_TRUE(explained["explanations"][1].is_array());  // several classes: a list
  EXPECT_EQ(explained["explanations"][1][1]["target_name"], "cat");
  const json predicted = json::parse(KServeAnswer(g, /*explain=*/false).value());
  EXPECT_FALSE(predicted.contains("explanations"));
  EXPECT_EQ(predicted["predictions"].size(), 2U);
}

std::string Floats(const std::vector<float>& values) {
  std::string out(values.size() * sizeof(float), '\0');
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

TEST(InferenceV2, ImagesAndTensorsAreTheInputs) {
  auto bytes = ParseInferRequest(R"({"id": "42", "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
      "data": ["aGk=", "aGkh"]}], "parameters": {"target": "cat", "n_steps": 16, "smoothgrad_sigma": 0.25}})",
                                 2);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  EXPECT_EQ(bytes->id, "42");
  ASSERT_EQ(bytes->inputs.size(), 2U);
  EXPECT_EQ(bytes->inputs[0].bytes, "hi");
  EXPECT_EQ(bytes->inputs[1].bytes, "hi!");
  EXPECT_EQ(bytes->inputs[0].side, 0);
  EXPECT_FALSE(bytes->explain);
  EXPECT_EQ(bytes->options, (QueryParams{{"n_steps", "16"}, {"smoothgrad_sigma", "0.25"}, {"target", "cat"}}));

  // FP32: [N, 3, S, S] (or [3, S, S]), nested or flat, row-major.
  std::vector<float> values(24);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.5F * static_cast<float>(i);
  json flat = json::array();
  for (float v : values) flat.push_back(v);
  const json request = {
      {"inputs", {{{"name", "input"}, {"shape", {2, 3, 2, 2}}, {"datatype", "FP32"}, {"data", flat}}}},
      {"parameters", {{"explain", true}}}};
  auto tensors = ParseInferRequest(request.dump(), 2);
  ASSERT_TRUE(tensors.ok()) << tensors.status().message();
  ASSERT_EQ(tensors->inputs.size(), 2U);
  EXPECT_EQ(tensors->inputs[0].side, 2);
  EXPECT_EQ(tensors->inputs[0].bytes, Floats({values.begin(), values.begin() + 12}));
  EXPECT_EQ(tensors->inputs[1].bytes, Floats({values.begin() + 12, values.end()}));
  EXPECT_TRUE(tensors->explain);
  json nested = request;
  nested["inputs"][0]["shape"] = {3, 2, 2};
  nested["inputs"][0]["data"] = json::parse("[[[0, 1], [2, 3]], [[4, 5], [6, 7]], [[8, 9], [10, 11]]]");
  auto one = ParseInferRequest(nested.dump(), 2);
  ASSERT_TRUE(one.ok()) << one.status().message();
  EXPECT_EQ(one->inputs.size(), 1U);

  // An attribution output asked for is an explanation.
  auto asked = ParseInferRequest(R"({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
      "data": ["aGk="]}], "outputs": [{"name": "integrated_grads"}]})",
                                 2);
  ASSERT_TRUE(asked.ok()) << asked.status().message();
  EXPECT_TRUE(asked->explain);
  EXPECT_EQ(asked->outputs, std::vector<std::string>{"integrated_grads"});
}

TEST(InferenceV2, MistakesAreNamed) {
  EXPECT_EQ(ParseInferRequest("{", 2).status().code(), StatusCode::kMalformed);
  const std::vector<std::pair<const char*, const char*>> cases = {
      {R"({"inputs": []})", "inputs"},
      {R"({"inputs": [{"shape": [1], "datatype": "INT8", "data": [1]}]})", "INT8"},
      {R"({"inputs": [{"shape": [2], "datatype": "BYTES", "data": ["aGk="]}]})", "BYTES"},
      {R"({"inputs": [{"shape": [1], "datatype": "BYTES", "data": ["@@@"]}]})", "data[0]"},
      {R"({"inputs": [{"shape": [1, 3, 2, 3], "datatype": "FP32", "data": []}]})", "[N, 3, 2, 2]"},
      {R"({"inputs": [{"shape": [1], "datatype": "BYTES", "data": ["aGk="]}], "outputs": [{"name": "x"}]})",
       "'x' is not one"},
      {R"({"inputs": [{"shape": [1], "datatype": "BYTES", "data": ["aGk="]}], "parameters": {"explain": 1}})",
       "explain"},
      {R"({"inputs": [{"shape": [1], "datatype": "BYTES", "data": ["aGk="]}], "parameters": {"seed": [1]}})",
       "parameters.seed"},
      {R"({"id": 7, "inputs": [{"shape": [1], "datatype": "BYTES", "data": ["aGk="]}]})", "id"},
  };
  for (const auto& [body, named] : cases) {
    const auto parsed = ParseInferRequest(body, 2);
    ASSERT_FALSE(parsed.ok()) << body;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalid) << body;
    EXPECT_NE(parsed.status().message().find(named), std::string::npos) << parsed.status().message();
  }
}

TEST(InferenceV2, OutputsAreBatchedTensors) {
  Gathering g;
  Fill(&g, {Reply(Prediction()), Reply(Prediction())});
  InferRequest request;
  request.id = "42";
  const json predicted = json::parse(InferAnswer("m", request, g).value());
  EXPECT_EQ(predicted["model_name"], "m");
  EXPECT_EQ(predicted["id"], "42");
  EXPECT_FALSE(predicted.contains("model_version"));  // no versions: the protocol says leave it out
  ASSERT_EQ(predicted["outputs"].size(), 3U);
  EXPECT_EQ(predicted["outputs"][0],
            json::parse(R"({"name": "logits", "datatype": "FP32", "shape": [2, 2], "data": [-1.0, 0.5, -1.0, 0.5]})"));
  EXPECT_EQ(predicted["outputs"][2]["name"], "predicted_class");
  EXPECT_EQ(predicted["outputs"][2]["shape"], json::parse("[2]"));
  EXPECT_EQ(predicted["outputs"][2]["data"], json::parse("[1, 1]"));

  Fill(&g, {Reply(Attribution(1, -0.5)), Reply(Attribution(0, 0.25))});
  request.explain = true;
  const json explained = json::parse(InferAnswer("m", request, g).value());
  std::map<std::string, json> outputs;
  for (const json& o : explained["outputs"]) outputs[o["name"]] = o;
  ASSERT_EQ(outputs.size(), InferOutputs().size());
  EXPECT_EQ(outputs["integrated_grads"]["shape"], json::parse("[2, 3, 1, 1]"));
  EXPECT_EQ(outputs["integrated_grads"]["data"], json::parse("[0.5, 1.5, 2.5, 0.5, 1.5, 2.5]"));
  EXPECT_EQ(outputs["integrated_directional_grads"]["shape"], json::parse("[2, 2, 3, 1, 1]"));
  EXPECT_EQ(outputs["step_sizes"]["shape"], json::parse("[2, 2, 1]"));
  EXPECT_EQ(outputs["target_class"]["data"], json::parse("[1, 0]"));
  EXPECT_EQ(outputs["convergence_delta"]["datatype"], "FP64");
  EXPECT_EQ(outputs["convergence_delta"]["data"], json::parse("[-0.5, 0.25]"));

  request.outputs = {"convergence_delta"};
  const json chosen = json::parse(InferAnswer("m", request, g).value());
  ASSERT_EQ(chosen["outputs"].size(), 1U);
  EXPECT_EQ(chosen["outputs"][0]["name"], "convergence_delta");

  // One tensor per input: several classes for one input cannot be an output.
  g.replies[0].others.push_back(Reply(Attribution(0, 0.0)));
  EXPECT_EQ(InferAnswer("m", request, g).status().code(), StatusCode::kInvalid);
}

TEST(InferenceV2, MetadataNamesTheInputsAndOutputs) {
  WorkerInfo info;
  info.model = "lanet";
  info.classes = {"a", "b", "c"};
  info.input_size = 32;
  const json metadata = ModelMetadata(info);
  EXPECT_EQ(metadata["name"], "lanet");
  EXPECT_EQ(metadata["inputs"][0], json::parse(R"({"name": "image", "datatype": "BYTES", "shape": [-1]})"));
  EXPECT_EQ(metadata["inputs"][1], json::parse(R"({"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]})"));
  EXPECT_EQ(metadata["outputs"].size(), InferOutputs().size());
  EXPECT_EQ(metadata["outputs"][0], json::parse(R"({"name": "logits", "datatype": "FP32", "shape": [-1, 3]})"));
  const json server = ServerMetadata();
  EXPECT_EQ(server["name"], "intgrads-images");
  EXPECT_EQ(server["extensions"], json::parse(R"(["attribution"])"));
}

TEST(TorchServe, TopFiveClassesAndTheIgAsNestedLists) {
  Gathering g;
  JobReply reply = Reply(Prediction());
  reply.probabilities = {0.1, 0.05, 0.3, 0.15, 0.2, 0.12, 0.08};
  g.replies = {reply};
  g.classes = {"a", "b", "c", "d", "e", "f", "g"};
  const std::string top = TorchServeAnswer(g, /*explain=*/false).value();
  EXPECT_EQ(top, R"({"c":0.3,"e":0.2,"d":0.15,"f":0.12,"a":0.1})");  // most probable first
  Fill(&g, {Reply(Attribution(1, 0.0))});
  EXPECT_EQ(json::parse(TorchServeAnswer(g, /*explain=*/true).value()), json::parse("[[[0.5]], [[1.5]], [[2.5]]]"));
  Fill(&g, {Reply(Attribution(1, 0.0)), Reply(Attribution(1, 0.0))});
  EXPECT_EQ(json::parse(TorchServeAnswer(g, /*explain=*/true).value()).size(), 2U);  // a list for several
}

}  // namespace
}  // namespace intgrads
