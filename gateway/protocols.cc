#include "gateway/protocols.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>

#include "common/text.h"

#ifndef INTGRADS_VERSION
#define INTGRADS_VERSION "0"
#endif

namespace intgrads {

using nlohmann::json;

namespace {

StatusOr<json> ParseBody(std::string_view body) {
  json doc = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return MalformedError("body: not valid JSON");
  if (!doc.is_object()) return InvalidError(std::string("body: expected a JSON object, found a ") + doc.type_name());
  return doc;
}

std::string Dump(const json& doc) { return doc.dump(-1, ' ', false, json::error_handler_t::replace); }

// The JSON documents of the replies' payloads, input by input; an input
// explained for several classes is refused where one answer per input is due.
StatusOr<std::vector<json>> Documents(const Gathering& g, const char* protocol) {
  std::vector<json> docs;
  for (const JobReply& reply : g.replies) {
    if (!reply.others.empty()) {
      return InvalidError(std::string(protocol) + ": one class per input (an infer output is one tensor per input)");
    }
    json doc = json::parse(reply.payload, nullptr, /*allow_exceptions=*/false);
    if (!doc.is_object()) return Status(StatusCode::kInternal, "a worker's answer is not JSON");
    docs.push_back(std::move(doc));
  }
  return docs;
}

// An option's value as the text the /v1 parser reads (a query value).
StatusOr<std::string> OptionText(const std::string& name, const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_boolean()) return std::string(value.get<bool>() ? "true" : "false");
  if (value.is_number_integer()) return std::to_string(value.get<int64_t>());
  if (value.is_number()) {
    char buffer[40];
    std::snprintf(buffer, sizeof(buffer), "%.17g", value.get<double>());
    return std::string(buffer);
  }
  return InvalidError("parameters." + Shorten(name, 64) + ": expected a string, a number or a boolean, found a " +
                      value.type_name());
}

// The dimensions of a nested JSON array (its first element's at each depth).
std::vector<int64_t> Shape(const json& value) {
  std::vector<int64_t> shape;
  for (const json* at = &value; at->is_array(); at = &(*at)[0]) {
    shape.push_back(static_cast<int64_t>(at->size()));
    if (at->empty()) break;
  }
  return shape;
}

// A nested array of numbers, flattened in row-major order, as JSON text
// without its brackets: "1,2,3".
std::string FlatText(const json& nested) {
  std::string text = nested.dump();
  text.erase(std::remove_if(text.begin(), text.end(), [](char c) { return c == '[' || c == ']'; }), text.end());
  return text;
}

void Flatten(const json& value, std::vector<const json*>* out) {
  if (!value.is_array()) {
    out->push_back(&value);
    return;
  }
  for (const json& item : value) Flatten(item, out);
}

struct OutputSpec {
  const char* name;
  const char* datatype;
  const char* member;  // of our JSON answer
  bool attribution;    // computed with explain only
  bool first_row;      // the member's [0]: a 1 x ... tensor of one input
};

const std::vector<OutputSpec>& OutputSpecs() {
  static const std::vector<OutputSpec> specs = {
      {"logits", "FP32", "output", false, true},
      {"probabilities", "FP64", "probabilities", false, false},
      {"predicted_class", "INT64", "predicted_class", false, false},
      {"target_class", "INT64", "target_class", true, false},
      {"convergence_delta", "FP64", "convergence_delta", true, false},
      {"n_steps", "INT64", "n_steps", true, false},
      {"integrated_grads", "FP32", "integrated_grads", true, true},
      {"integrated_directional_grads", "FP32", "integrated_directional_grads", true, false},
      {"step_sizes", "FP32", "step_sizes", true, false},
      {"intermediates", "FP32", "intermediates", true, false},
  };
  return specs;
}

const OutputSpec* FindOutput(const std::string& name) {
  for (const OutputSpec& spec : OutputSpecs()) {
    if (name == spec.name) return &spec;
  }
  return nullptr;
}

}  // namespace

StatusOr<std::string> KServeRequestBody(std::string_view body) {
  ASSIGN_OR_RETURN(json doc, ParseBody(body));
  auto instances = doc.find("instances");
  if (instances == doc.end()) instances = doc.find("inputs");
  if (instances == doc.end() || !instances->is_array() || instances->empty()) {
    return InvalidError("instances: expected a non-empty list of images (KServe v1's request)");
  }
  const json parameters = doc.value("parameters", json::object());
  if (!parameters.is_object()) return InvalidError("parameters: expected an object of the service's options");
  json out = json::object();
  out["inputs"] = json::array();
  auto b64 = [](const json& v) -> const json* {
    if (v.is_string()) return &v;
    if (v.is_object() && v.contains("b64") && v["b64"].is_string()) return &v["b64"];
    return nullptr;
  };
  for (size_t i = 0; i < instances->size(); ++i) {
    const json& instance = (*instances)[i];
    const std::string where = "instances[" + std::to_string(i) + "]";
    json input = json::object();
    if (instance.is_string()) {
      input["image"] = instance;
    } else if (instance.is_array()) {
      input["img_data"] = instance;
    } else if (instance.is_object()) {
      const json* image = b64(instance);
      for (const char* key : {"image_bytes", "image"}) {
        if (image == nullptr && instance.contains(key)) image = b64(instance[key]);
      }
      if (image != nullptr) {
        input["image"] = *image;
      } else if (instance.contains("img_data")) {
        input["img_data"] = instance["img_data"];
      } else {
        return InvalidError(where +
                            ": expected an image: base64, {\"b64\": ...}, {\"image_bytes\": {\"b64\": ...}} "
                            "or H x W x 3 integers");
      }
      for (const char* key : {"target", "name"}) {
        if (instance.contains(key)) input[key] = instance[key];
      }
    } else {
      return InvalidError(where + ": expected an image, found a " + std::string(instance.type_name()));
    }
    if (!input.contains("target") && parameters.contains("target")) input["target"] = parameters["target"];
    out["inputs"].push_back(std::move(input));
  }
  for (const auto& [key, value] : parameters.items()) {
    if (key != "target") out[key] = value;
  }
  return Dump(out);
}

StatusOr<std::string> KServeAnswer(const Gathering& g, bool explain) {
  std::string out = "{\"predictions\":[";
  for (size_t i = 0; i < g.replies.size(); ++i) out += (i > 0 ? "," : "") + Dump(json(g.replies[i].probabilities));
  out += "]";
  if (explain) {
    out += ",\"explanations\":[";
    for (size_t i = 0; i < g.replies.size(); ++i) {
      const JobReply& r = g.replies[i];
      out += i > 0 ? "," : "";
      if (r.others.empty()) {
        out += r.payload;
        continue;
      }
      out += "[" + r.payload;
      for (const JobReply& other : r.others) out += "," + other.payload;
      out += "]";
    }
    out += "]";
  }
  return out + "}";
}

const std::vector<std::string>& InferOutputs() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const OutputSpec& spec : OutputSpecs()) out.emplace_back(spec.name);
    return out;
  }();
  return names;
}

StatusOr<InferRequest> ParseInferRequest(std::string_view body, int input_size) {
  ASSIGN_OR_RETURN(json doc, ParseBody(body));
  InferRequest request;
  if (doc.contains("id")) {
    if (!doc["id"].is_string()) return InvalidError("id: expected a string");
    request.id = doc["id"];
  }
  const auto inputs = doc.find("inputs");
  if (inputs == doc.end() || !inputs->is_array() || inputs->size() != 1 || !(*inputs)[0].is_object()) {
    return InvalidError("inputs: expected one input tensor: the images (BYTES, base64) or the model's input (FP32)");
  }
  const json& input = (*inputs)[0];
  const std::string datatype = input.value("datatype", "");
  std::vector<int64_t> shape;
  if (!input.contains("shape") || !input["shape"].is_array()) return InvalidError("inputs[0].shape: missing");
  for (const json& d : input["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) {
      return InvalidError("inputs[0].shape: expected non-negative integers");
    }
    shape.push_back(d.get<int64_t>());
  }
  if (!input.contains("data")) return InvalidError("inputs[0].data: missing");
  std::vector<const json*> flat;
  Flatten(input["data"], &flat);
  if (datatype == "BYTES") {
    if (shape.size() != 1 || shape[0] < 1 || flat.size() != static_cast<size_t>(shape[0])) {
      return InvalidError("inputs[0]: BYTES images have shape [N] and N elements, each an image as base64");
    }
    for (size_t i = 0; i < flat.size(); ++i) {
      if (!flat[i]->is_string())
        return InvalidError("inputs[0].data: element " + std::to_string(i) + " is not a string");
      StatusOr<std::string> bytes = DecodeBase64(flat[i]->get_ref<const std::string&>());
      if (!bytes.ok()) return InvalidError("inputs[0].data[" + std::to_string(i) + "]: " + bytes.status().message());
      request.inputs.push_back(GivenInput{std::move(bytes).value(), 0});
    }
  } else if (datatype == "FP32") {
    if (shape.size() == 3) shape.insert(shape.begin(), 1);
    const auto plane = static_cast<size_t>(3) * input_size * input_size;
    const bool fits = shape.size() == 4 && shape[0] >= 1 && shape[1] == 3 && shape[2] == input_size &&
                      shape[3] == input_size && flat.size() == static_cast<size_t>(shape[0]) * plane;
    if (!fits) {
      return InvalidError("inputs[0]: an FP32 input is the model's normalized input, shape [N, 3, " +
                          std::to_string(input_size) + ", " + std::to_string(input_size) + "] with as many numbers");
    }
    for (size_t n = 0; n < static_cast<size_t>(shape[0]); ++n) {
      std::vector<float> values(plane);
      for (size_t i = 0; i < plane; ++i) {
        const json& v = *flat[n * plane + i];
        if (!v.is_number()) return InvalidError("inputs[0].data: FP32 data holds numbers only");
        values[i] = v.get<float>();
      }
      std::string bytes(plane * sizeof(float), '\0');
      std::memcpy(bytes.data(), values.data(), bytes.size());
      request.inputs.push_back(GivenInput{std::move(bytes), input_size});
    }
  } else {
    return InvalidError("inputs[0].datatype: '" + Shorten(datatype, 32) + "' is not BYTES or FP32");
  }
  const json parameters = doc.value("parameters", json::object());
  if (!parameters.is_object()) return InvalidError("parameters: expected an object");
  for (const auto& [key, value] : parameters.items()) {
    if (key == "explain") {
      if (!value.is_boolean()) return InvalidError("parameters.explain: expected true or false");
      request.explain = value.get<bool>();
      continue;
    }
    ASSIGN_OR_RETURN(std::string text, OptionText(key, value));
    request.options.emplace_back(key, std::move(text));
  }
  if (doc.contains("outputs")) {
    if (!doc["outputs"].is_array()) return InvalidError("outputs: expected a list of {\"name\": ...}");
    for (const json& output : doc["outputs"]) {
      const std::string name = output.is_object() ? output.value("name", "") : "";
      const OutputSpec* spec = FindOutput(name);
      if (spec == nullptr) {
        std::string known;
        for (const std::string& n : InferOutputs()) known += (known.empty() ? "" : ", ") + n;
        return InvalidError("outputs: '" + Shorten(name, 64) + "' is not one; the outputs are " + known);
      }
      request.explain = request.explain || spec->attribution;
      request.outputs.push_back(name);
    }
  }
  return request;
}

StatusOr<std::string> InferAnswer(const std::string& model, const InferRequest& request, const Gathering& g) {
  ASSIGN_OR_RETURN(std::vector<json> docs, Documents(g, "infer"));
  std::string out = "{\"model_name\":" + Dump(model);
  if (!request.id.is_null()) out += ",\"id\":" + Dump(request.id);
  out += ",\"outputs\":[";
  bool first = true;
  for (const OutputSpec& spec : OutputSpecs()) {
    const bool asked = request.outputs.empty() ? (request.explain || !spec.attribution)
                                               : std::find(request.outputs.begin(), request.outputs.end(), spec.name) !=
                                                     request.outputs.end();
    if (!asked) continue;
    std::vector<int64_t> shape;
    std::string data;
    for (size_t i = 0; i < docs.size(); ++i) {
      const json& member = docs[i][spec.member];
      const json& value = spec.first_row ? member.at(0) : member;
      const std::vector<int64_t> one = Shape(value);
      if (i == 0) {
        shape = one;
      } else if (one != shape) {
        return InvalidError("infer: the inputs' " + std::string(spec.name) +
                            " differ in shape (adaptive steps chose different n_steps); send them one at a time");
      }
      data += (i > 0 ? "," : "") + FlatText(value);
    }
    shape.insert(shape.begin(), static_cast<int64_t>(docs.size()));
    out += first ? "" : ",";
    first = false;
    out += "{\"name\":\"" + std::string(spec.name) + "\",\"datatype\":\"" + spec.datatype +
           "\",\"shape\":" + Dump(json(shape)) + ",\"data\":[" + data + "]}";
  }
  return out + "]}";
}

json ServerMetadata() {
  return {{"name", "intgrads-images"}, {"version", INTGRADS_VERSION}, {"extensions", {"attribution"}}};
}

json ModelMetadata(const WorkerInfo& info) {
  const int64_t s = info.input_size;
  const auto classes = static_cast<int64_t>(info.classes.size());
  auto tensor = [](const std::string& name, const std::string& datatype, std::vector<int64_t> shape) {
    return json{{"name", name}, {"datatype", datatype}, {"shape", std::move(shape)}};
  };
  json outputs = json::array();
  for (const OutputSpec& spec : OutputSpecs()) {
    std::vector<int64_t> shape = {-1};
    const std::string name = spec.name;
    if (name == "logits" || name == "probabilities") shape = {-1, classes};
    if (name == "integrated_grads") shape = {-1, 3, s, s};
    if (name == "integrated_directional_grads" || name == "intermediates") shape = {-1, -1, 3, s, s};
    if (name == "step_sizes") shape = {-1, -1, 1};
    outputs.push_back(tensor(name, spec.datatype, shape));
  }
  return {{"name", info.model},
          {"platform", "pytorch_libtorch"},
          {"inputs", {tensor("image", "BYTES", {-1}), tensor("input", "FP32", {-1, 3, s, s})}},
          {"outputs", std::move(outputs)}};
}

StatusOr<std::string> TorchServeAnswer(const Gathering& g, bool explain) {
  std::vector<std::string> answers;
  if (explain) {
    ASSIGN_OR_RETURN(std::vector<json> docs, Documents(g, "explanations"));
    for (const json& doc : docs) answers.push_back(doc["integrated_grads"].at(0).dump());
  } else {
    for (const JobReply& reply : g.replies) {
      const std::vector<double>& p = reply.probabilities;
      std::vector<size_t> order(p.size());
      std::iota(order.begin(), order.end(), 0);
      const size_t top = std::min<size_t>(5, order.size());
      std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(top), order.end(),
                        [&p](size_t x, size_t y) { return p[x] > p[y]; });
      nlohmann::ordered_json best = nlohmann::ordered_json::object();
      for (size_t i = 0; i < top; ++i) {
        best[order[i] < g.classes.size() ? g.classes[order[i]] : std::to_string(order[i])] = p[order[i]];
      }
      answers.push_back(best.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
    }
  }
  if (answers.size() == 1) return answers.front();
  std::string out = "[";
  for (size_t i = 0; i < answers.size(); ++i) out += (i > 0 ? "," : "") + answers[i];
  return out + "]";
}

}  // namespace intgrads
