#include "common/attributions.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "common/text.h"

namespace intgrads {

using nlohmann::json;

namespace {

std::string Printf(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", v);
  return buffer;
}

std::string Printf17(double v) {
  char buffer[40];
  std::snprintf(buffer, sizeof(buffer), "%.17g", v);
  return buffer;
}

// The media type of a Content-Type or Accept entry, lower case, without parameters.
std::string MediaType(std::string_view value) { return Lower(Trim(value.substr(0, value.find(';')))); }

// A parameter of a header value: boundary=..., name="...", q=0.5.
std::string HeaderParameter(std::string_view value, std::string_view key) {
  size_t at = value.find(';');
  while (at != std::string_view::npos) {
    std::string_view rest = value.substr(at + 1);
    const size_t next = rest.find(';');
    std::string_view item = Trim(rest.substr(0, next));
    const size_t equals = item.find('=');
    if (equals != std::string_view::npos && Lower(Trim(item.substr(0, equals))) == key) {
      std::string_view v = Trim(item.substr(equals + 1));
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      return std::string(v);
    }
    at = next == std::string_view::npos ? next : at + 1 + next;
  }
  return {};
}

Status UnknownParameter(const std::string& name) {
  return InvalidError("unknown parameter '" + Shorten(name, 64) +
                      "'; known: image, img_data, inputs, baseline_image, " + JoinNames(AttributionParameters()));
}

// A number from an option's text, within [low, high].
template <typename T>
Status Number(const std::string& name, const std::string& text, double low, double high, T* out) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !(v >= low && v <= high) ||
      (std::is_integral_v<T> && v != std::floor(v))) {
    return InvalidError(name + ": expected " + (std::is_integral_v<T> ? "an integer" : "a number") + " in [" +
                        Printf(low) + ", " + Printf(high) + "], got '" + Shorten(text, 32) + "'");
  }
  *out = static_cast<T>(v);
  return Status::Ok();
}

// The targets given, occurrence by occurrence (one per image; a JSON array
// is one occurrence of several).
using TargetLists = std::vector<std::vector<std::string>>;

// Sets one option from its text (query, form field) into `request`.
Status SetOption(const std::string& name, const std::string& value, AttributionsRequest* request,
                 TargetLists* targets) {
  if (name == "target" || name == "target_class") {
    targets->push_back({value});
  } else if (name == "top_k") {
    return Number(name, value, 0, 1e6, &request->top_k);
  } else if (auto region = SetRegionOption(name, value, &request->regions); !region.ok() || *region) {
    return region.status();
  } else if (name == "n_steps") {
    if (value.empty() || value.size() > 9 || !std::all_of(value.begin(), value.end(), ::isdigit)) {
      return InvalidError("n_steps: expected a positive integer, got '" + Shorten(value, 32) + "'");
    }
    request->n_steps = std::stoi(value);
  } else if (name == "method") {
    ASSIGN_OR_RETURN(request->method, Parse<Method>(value));
  } else if (name == "format") {
    ASSIGN_OR_RETURN(request->format, Parse<Format>(value));
  } else if (name == "heatmap") {
    ASSIGN_OR_RETURN(request->heatmap, Parse<Heatmap>(value));
  } else if (name == "sign") {
    ASSIGN_OR_RETURN(request->sign, Parse<Sign>(value));
  } else if (name == "outlier_perc") {
    double perc = 0.0;
    RETURN_IF_ERROR(Number(name, value, 0.0, 100.0, &perc));
    request->outlier_perc = perc;
  } else if (name == "model") {
    request->model = Shorten(value, 128);
  } else if (name == "name") {
    // a label for a single raw image; handled by the caller
  } else if (auto set = SetPathOption(name, value, &request->paths); !set.ok() || *set) {
    return set.status();
  } else {
    return UnknownParameter(name);
  }
  return Status::Ok();
}

// The same from a JSON member: strings and integers as their text.
Status SetJsonOption(const std::string& name, const json& value, AttributionsRequest* request, TargetLists* targets) {
  // An unknown member is named as such, whatever its value's type.
  const std::vector<std::string>& known = AttributionParameters();
  if (name != "target_class" && std::find(known.begin(), known.end(), name) == known.end()) {
    return UnknownParameter(name);
  }
  if (value.is_null()) return Status::Ok();
  if ((name == "target" || name == "target_class") && value.is_array()) {
    if (value.empty()) return InvalidError(name + ": an empty list (give classes, or leave it out for 'predicted')");
    std::vector<std::string> list;
    for (const json& t : value) {
      if (t.is_number_integer()) {
        list.push_back(std::to_string(t.get<int64_t>()));
      } else if (t.is_string()) {
        list.push_back(t.get<std::string>());
      } else {
        return InvalidError(name + ": expected class names or indices, found a " + t.type_name());
      }
    }
    targets->push_back(std::move(list));
    return Status::Ok();
  }
  static const std::vector<std::string> numeric = {
      "blur_sigma", "baseline_count",  "smoothgrad_samples", "smoothgrad_sigma", "seed",        "tolerance",
      "top_k",      "region_min_side", "segments",           "top_regions",      "outlier_perc"};
  if (value.is_number() && std::find(numeric.begin(), numeric.end(), name) != numeric.end()) {
    const std::string text =
        value.is_number_integer() ? std::to_string(value.get<int64_t>()) : Printf17(value.get<double>());
    return SetOption(name, text, request, targets);
  }
  if (value.is_number_integer()) {
    if (name != "n_steps" && name != "target" && name != "target_class") {
      return InvalidError(name + ": expected a string, found a number");
    }
    const auto v = value.get<int64_t>();
    if (name == "n_steps" && (v < 1 || v > 1000000000)) {
      return InvalidError("n_steps: " + std::to_string(v) + " is not a positive integer within range");
    }
    if (name == "n_steps") {
      request->n_steps = static_cast<int>(v);
      return Status::Ok();
    }
    targets->push_back({std::to_string(v)});
    return Status::Ok();
  }
  if (!value.is_string()) {
    return InvalidError(name + ": expected a " + (name == "n_steps" ? "number" : "string") + ", found a " +
                        value.type_name());
  }
  if (name == "n_steps") return InvalidError("n_steps: expected an integer, found a string");
  return SetOption(name, value.get<std::string>(), request, targets);
}

ImageLimits ImageLimitsOf(const AttributionLimits& limits) {
  return ImageLimits{limits.request.max_side, limits.request.max_pixels};
}

// An upload read as far as its header.
StatusOr<EncodedImage> ReadUpload(std::string bytes, const std::string& what, const AttributionLimits& limits) {
  if (bytes.empty()) return InvalidError(what + ": empty (expected a PNG or JPEG)");
  auto header = ReadImageHeader(bytes, ImageLimitsOf(limits));
  if (!header.ok()) return Status(header.status().code(), what + ": " + header.status().message());
  return EncodedImage{std::move(bytes), *header, what};
}

// The baseline image, a file part or the JSON member baseline_image: one per request.
Status SetBaselineUpload(std::string bytes, const AttributionLimits& limits, AttributionsRequest* request) {
  if (request->baseline_upload) return InvalidError("baseline_image: given twice (one baseline image per request)");
  ASSIGN_OR_RETURN(request->baseline_upload, ReadUpload(std::move(bytes), "baseline_image", limits));
  return Status::Ok();
}

// The JSON member baseline_image: a base64 PNG or JPEG.
Status ReadBaselineImage(const json& value, const AttributionLimits& limits, AttributionsRequest* request) {
  if (!value.is_string()) return InvalidError("baseline_image: expected a base64 string");
  auto bytes = DecodeBase64(value.get_ref<const std::string&>());
  if (!bytes.ok()) return InvalidError("baseline_image: " + bytes.status().message());
  return SetBaselineUpload(std::move(bytes).value(), limits, request);
}

// The pixels a request's images take, uploads counted from their headers.
int64_t RequestPixels(const AttributionsRequest& request) {
  int64_t pixels = 0;
  auto add = [&pixels](int64_t height, int64_t width) { pixels += height * width; };
  for (const AttributionInput& input : request.inputs) {
    if (input.upload) {
      add(input.upload->header.height, input.upload->header.width);
    } else {
      add(input.image.height, input.image.width);
    }
  }
  if (request.baseline_upload) {
    for (size_t i = 0; i < std::max<size_t>(1, request.inputs.size()); ++i) {
      add(request.baseline_upload->header.height, request.baseline_upload->header.width);
    }
  }
  return pixels;
}

// One JSON input: {"image": base64} or {"img_data": [...]}, with "target"
// and "name"; `options` receives any option members (top level only).
Status ReadJsonInput(const json& object, const AttributionLimits& limits, const std::string& where,
                     AttributionsRequest* request, AttributionInput* input, bool top_level) {
  TargetLists targets;
  bool has_image = false;
  for (const auto& [key, value] : object.items()) {
    if (key == "image") {
      if (!value.is_string())
        return InvalidError(where + "image: expected a base64 string, found a " + value.type_name());
      auto bytes = DecodeBase64(value.get_ref<const std::string&>());
      if (!bytes.ok()) return InvalidError(where + "image: " + bytes.status().message());
      ASSIGN_OR_RETURN(input->upload, ReadUpload(std::move(bytes).value(), where + "image", limits));
      has_image = true;
    } else if (key == "img_data") {
      auto image = ReadImageJson(value, limits.request);
      if (!image.ok()) return Status(image.status().code(), where + image.status().message());
      input->image = std::move(image).value();
      has_image = true;
    } else if (key == "baseline_image" && top_level) {
      RETURN_IF_ERROR(ReadBaselineImage(value, limits, request));
    } else if (key == "name") {
      if (!value.is_string()) return InvalidError(where + "name: expected a string");
      input->name = Shorten(value.get<std::string>(), 128);
    } else if (key == "target" || key == "target_class") {
      RETURN_IF_ERROR(SetJsonOption(key, value, request, &targets));
    } else if (top_level && key != "inputs") {
      RETURN_IF_ERROR(SetJsonOption(key, value, request, &targets));
    } else if (key != "inputs") {
      return InvalidError(where + "unknown member '" + Shorten(key, 64) +
                          "' (an input has image or img_data, target and name)");
    }
  }
  if (!has_image) return InvalidError(where + "image: missing (a base64 PNG or JPEG in 'image', or 'img_data')");
  if (targets.size() > 1) return InvalidError(where + "target: given twice (target and target_class)");
  if (!targets.empty()) input->targets = targets.front();
  return Status::Ok();
}

Status ReadJsonBody(std::string_view body, const AttributionLimits& limits, AttributionsRequest* request) {
  bool too_deep = false;
  json::parser_callback_t guard = [&too_deep](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::array_start || event == json::parse_event_t::object_start) && depth > 8) {
      too_deep = true;
    }
    return !too_deep;
  };
  const json doc = json::parse(body.begin(), body.end(), guard, /*allow_exceptions=*/false);
  if (too_deep) return InvalidError("body: JSON nested deeper than 8 levels");
  if (doc.is_discarded()) return MalformedError("body: not valid JSON");
  if (!doc.is_object()) return InvalidError(std::string("body: expected a JSON object, found a ") + doc.type_name());
  const auto inputs = doc.find("inputs");
  if (inputs == doc.end()) {
    AttributionInput input;
    RETURN_IF_ERROR(ReadJsonInput(doc, limits, "", request, &input, true));
    request->inputs.push_back(std::move(input));
    return Status::Ok();
  }
  if (doc.contains("image") || doc.contains("img_data") || doc.contains("target") || doc.contains("target_class")) {
    return InvalidError("inputs: with a list of inputs, each input carries its own image and target");
  }
  if (!inputs->is_array() || inputs->empty()) return InvalidError("inputs: expected a non-empty list of inputs");
  if (inputs->size() > static_cast<size_t>(limits.max_images)) {
    return TooLargeError("inputs: " + std::to_string(inputs->size()) + " images is over the limit of " +
                         std::to_string(limits.max_images) + " per request (raise with --max-images)");
  }
  // The options first (top level), then each input.
  TargetLists unused;
  for (const auto& [key, value] : doc.items()) {
    if (key == "baseline_image") {
      RETURN_IF_ERROR(ReadBaselineImage(value, limits, request));
    } else if (key != "inputs") {
      RETURN_IF_ERROR(SetJsonOption(key, value, request, &unused));
    }
  }
  for (size_t i = 0; i < inputs->size(); ++i) {
    const json& item = (*inputs)[i];
    const std::string where = "inputs[" + std::to_string(i) + "].";
    if (!item.is_object()) return InvalidError(where + ": expected an object, found a " + item.type_name());
    AttributionInput input;
    RETURN_IF_ERROR(ReadJsonInput(item, limits, where, request, &input, false));
    request->inputs.push_back(std::move(input));
  }
  return Status::Ok();
}

Status ReadMultipartBody(std::string_view content_type, std::string_view body, const AttributionLimits& limits,
                         AttributionsRequest* request, TargetLists* targets) {
  ASSIGN_OR_RETURN(std::vector<FormPart> parts, ParseMultipart(content_type, body));
  for (const FormPart& part : parts) {
    if (part.name == "image" || part.name == "data") {  // "data": TorchServe's name for it
      if (request->inputs.size() >= static_cast<size_t>(limits.max_images)) {
        return TooLargeError("image: more than " + std::to_string(limits.max_images) +
                             " images in one request (raise with --max-images)");
      }
      AttributionInput input;
      input.name = Shorten(part.filename, 128);
      const std::string what = "image " + std::to_string(request->inputs.size()) +
                               (part.filename.empty() ? "" : " (" + Shorten(part.filename, 64) + ")");
      ASSIGN_OR_RETURN(input.upload, ReadUpload(std::string(part.data), what, limits));
      request->inputs.push_back(std::move(input));
    } else if (part.name == "baseline_image") {
      RETURN_IF_ERROR(SetBaselineUpload(std::string(part.data), limits, request));
    } else {
      RETURN_IF_ERROR(SetOption(part.name, std::string(part.data), request, targets));
    }
  }
  if (request->inputs.empty()) return InvalidError("image: missing (send the file as -F image=@cat.jpg)");
  return Status::Ok();
}

// The checks of a request's options once read, its images not yet decoded.
Status ValidateOptions(const AttributionsRequest& request, const AttributionLimits& limits) {
  RETURN_IF_ERROR(ValidateSteps(request.n_steps, request.method, limits.request));
  // The baseline image is checked for being there; its pixels come with DecodeUploads.
  PathRequest paths = request.paths;
  if (request.baseline_upload) paths.baseline_image = Image{1, 1, 1, {0}};
  RETURN_IF_ERROR(ValidatePathRequest(paths, request.method, limits.request));
  RETURN_IF_ERROR(ValidateHeatmap(request.heatmap, request.sign, request.outlier_perc.value_or(2.0)));
  if (request.outlier_perc && request.sign == Sign::kNone) {
    return InvalidError(
        "outlier_perc: goes with Captum's look; give sign too (all, positive, negative or "
        "absolute_value)");
  }
  return Status::Ok();
}

}  // namespace

const std::vector<std::string>& PathParameters() {
  static const std::vector<std::string> names = {
      "baseline", "blur_sigma", "baseline_count", "smoothgrad_samples", "smoothgrad_sigma", "seed", "tolerance"};
  return names;
}

StatusOr<bool> SetPathOption(const std::string& name, const std::string& value, PathRequest* paths) {
  Status set;
  if (name == "baseline") {
    ASSIGN_OR_RETURN(paths->baseline, Parse<Baseline>(value));
  } else if (name == "blur_sigma") {
    set = Number(name, value, 0.0, 1000.0, &paths->blur_sigma);
  } else if (name == "baseline_count") {
    set = Number(name, value, 1, 1e6, &paths->baseline_count);
  } else if (name == "smoothgrad_samples") {
    set = Number(name, value, 0, 1e6, &paths->smoothgrad_samples);
  } else if (name == "smoothgrad_sigma") {
    set = Number(name, value, 0.0, 10.0, &paths->smoothgrad_sigma);
  } else if (name == "seed") {
    set = Number(name, value, 0, 9e15, &paths->seed);
  } else if (name == "tolerance") {
    set = Number(name, value, 0.0, 1.0, &paths->tolerance);
  } else {
    return false;
  }
  if (!set.ok()) return set;
  return true;
}

const std::vector<std::string>& RegionParameters() {
  static const std::vector<std::string> names = {"regions", "region_min_side", "segments", "top_regions"};
  return names;
}

StatusOr<bool> SetRegionOption(const std::string& name, const std::string& value, RegionRequest* regions) {
  Status set;
  if (name == "regions") {
    ASSIGN_OR_RETURN(regions->kind, Parse<RegionKind>(value));
  } else if (name == "region_min_side") {
    set = Number(name, value, 2, 4096, &regions->min_side);
  } else if (name == "segments") {
    set = Number(name, value, 1, kMaxSegments, &regions->segments);
  } else if (name == "top_regions") {
    set = Number(name, value, 1, kMaxTopRegions, &regions->top);
  } else {
    return false;
  }
  if (!set.ok()) return set;
  return true;
}

const std::vector<std::string>& AttributionParameters() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> all = {"target", "top_k"};
    all.insert(all.end(), RegionParameters().begin(), RegionParameters().end());
    all.insert(all.end(), {"n_steps", "method", "format", "heatmap", "sign", "outlier_perc", "model", "name"});
    all.insert(all.end(), PathParameters().begin(), PathParameters().end());
    return all;
  }();
  return names;
}

StatusOr<int> ResolveTarget(const std::string& target, const std::vector<std::string>& classes) {
  if (target == "predicted") return kPredictedTarget;
  const auto found = std::find(classes.begin(), classes.end(), target);
  if (found != classes.end()) return static_cast<int>(found - classes.begin());
  if (!target.empty() && target.size() <= 9 && std::all_of(target.begin(), target.end(), ::isdigit)) {
    const int index = std::stoi(target);
    if (index < static_cast<int>(classes.size())) return index;
    return InvalidError("target: index " + target + " is outside 0.." + std::to_string(classes.size() - 1));
  }
  return InvalidError("target: unknown class '" + Shorten(target, 64) + "'; expected 'predicted', one of " +
                      JoinNames(classes) + ", or an index 0.." + std::to_string(classes.size() - 1));
}

StatusOr<std::vector<int>> ResolveTargets(const std::vector<std::string>& targets,
                                          const std::vector<std::string>& classes) {
  std::vector<int> out;
  for (const std::string& target : targets) {
    auto one = ResolveTarget(target, classes);
    if (one.ok() || target.find(',') == std::string::npos) {
      if (!one.ok()) return one.status();
      out.push_back(*one);
      continue;
    }
    size_t begin = 0;
    while (begin <= target.size()) {
      const size_t end = std::min(target.find(',', begin), target.size());
      ASSIGN_OR_RETURN(int index,
                       ResolveTarget(std::string(Trim(std::string_view(target).substr(begin, end - begin))), classes));
      out.push_back(index);
      begin = end + 1;
    }
  }
  return out;
}

StatusOr<AttributionsRequest> ReadAttributionsRequest(std::string_view content_type, const QueryParams& query,
                                                      std::string_view body, const AttributionLimits& limits) {
  AttributionsRequest request;
  TargetLists targets;
  std::string name;
  for (const auto& [key, value] : query) {
    RETURN_IF_ERROR(SetOption(key, value, &request, &targets));
    if (key == "name") name = Shorten(value, 128);
  }
  const size_t query_targets = targets.size();
  const std::string type = MediaType(content_type);
  if (type == "application/json" || (type.empty() && Trim(body).substr(0, 1) == "{")) {
    if (query_targets > 0) {
      // A JSON body carries its targets; a query target would be a second source.
      const std::vector<std::string> t = targets.front();
      RETURN_IF_ERROR(ReadJsonBody(body, limits, &request));
      if (request.inputs.size() != 1) {
        return InvalidError("target: a query target with several inputs; give each input its own target");
      }
      if (request.inputs.front().targets == std::vector<std::string>{"predicted"}) request.inputs.front().targets = t;
    } else {
      RETURN_IF_ERROR(ReadJsonBody(body, limits, &request));
    }
  } else if (type == "multipart/form-data") {
    RETURN_IF_ERROR(ReadMultipartBody(content_type, body, limits, &request, &targets));
    const size_t images = request.inputs.size();
    if (targets.size() == images) {
      for (size_t i = 0; i < images; ++i) request.inputs[i].targets = targets[i];
    } else if (!(targets.empty() ||
                 (targets.size() == 1 && targets.front() == std::vector<std::string>{"predicted"}))) {
      return InvalidError("target: " + std::to_string(images) + " images but " + std::to_string(targets.size()) +
                          " targets; give one target per image, in order (or none, or 'predicted', for each "
                          "image's predicted class)");
    }
  } else if (type == "image/png" || type == "image/jpeg" || type == "application/octet-stream" || type.empty()) {
    AttributionInput input;
    ASSIGN_OR_RETURN(input.upload, ReadUpload(std::string(body), "body", limits));
    if (targets.size() > 1) return InvalidError("target: given more than once for one image");
    if (!targets.empty()) input.targets = targets.front();
    input.name = name;
    request.inputs.push_back(std::move(input));
  } else {
    return InvalidError("Content-Type: '" + Shorten(type, 64) +
                        "' is not read here; send image/png, image/jpeg, multipart/form-data or application/json");
  }
  if (request.inputs.size() > static_cast<size_t>(limits.max_images)) {
    return TooLargeError(std::to_string(request.inputs.size()) + " images is over the limit of " +
                         std::to_string(limits.max_images) + " per request (raise with --max-images)");
  }
  if (const int64_t pixels = RequestPixels(request); pixels > limits.max_request_pixels) {
    return TooLargeError("images: " + std::to_string(pixels) +
                         " pixels in all (the baseline image once per image) is over the " + "limit of " +
                         std::to_string(limits.max_request_pixels) + " per request (raise with --max-request-pixels)");
  }
  RETURN_IF_ERROR(ValidateOptions(request, limits));
  return request;
}

StatusOr<AttributionsRequest> ReadGivenInputs(const QueryParams& options, std::vector<GivenInput> given,
                                              const AttributionLimits& limits) {
  AttributionsRequest request;
  TargetLists targets;
  for (const auto& [key, value] : options) RETURN_IF_ERROR(SetOption(key, value, &request, &targets));
  if (targets.size() > 1) return InvalidError("target: given more than once");
  if (given.empty()) return InvalidError("inputs: none given");
  if (given.size() > static_cast<size_t>(limits.max_images)) {
    return TooLargeError(std::to_string(given.size()) + " inputs is over the limit of " +
                         std::to_string(limits.max_images) + " per request (raise with --max-images)");
  }
  for (size_t i = 0; i < given.size(); ++i) {
    AttributionInput input;
    if (!targets.empty()) input.targets = targets.front();  // the request's parameters apply to each input
    if (given[i].side > 0) {
      const auto side = static_cast<size_t>(given[i].side);
      if (given[i].bytes.size() != 3 * side * side * sizeof(float)) {
        return InvalidError("inputs: a tensor of " + std::to_string(given[i].bytes.size()) +
                            " bytes is not float32 3 x " + std::to_string(side) + " x " + std::to_string(side));
      }
      input.tensor = std::move(given[i].bytes);
      input.image = Image{given[i].side, given[i].side, 3, {}};
    } else {
      ASSIGN_OR_RETURN(input.upload, ReadUpload(std::move(given[i].bytes), "input " + std::to_string(i), limits));
    }
    request.inputs.push_back(std::move(input));
  }
  if (const int64_t pixels = RequestPixels(request); pixels > limits.max_request_pixels) {
    return TooLargeError("inputs: " + std::to_string(pixels) + " pixels in all is over the limit of " +
                         std::to_string(limits.max_request_pixels) + " per request (raise with --max-request-pixels)");
  }
  RETURN_IF_ERROR(ValidateOptions(request, limits));
  return request;
}

uint64_t RequestImageBytes(const AttributionsRequest& request) {
  uint64_t bytes = 0;
  for (const AttributionInput& input : request.inputs) {
    bytes += input.upload ? input.upload->header.decode_bytes : input.image.pixels.size() + input.tensor.size();
    if (request.baseline_upload) bytes += request.baseline_upload->header.decode_bytes;
  }
  return bytes;
}

Status DecodeUploads(AttributionsRequest* request, const AttributionLimits& limits) {
  auto decode = [&limits](std::optional<EncodedImage>& upload, Image* image) -> Status {
    if (!upload) return Status::Ok();
    auto decoded = DecodeImage(upload->bytes, ImageLimitsOf(limits));
    if (!decoded.ok()) return Status(decoded.status().code(), upload->what + ": " + decoded.status().message());
    *image = std::move(decoded).value();
    upload.reset();
    return Status::Ok();
  };
  for (AttributionInput& input : request->inputs) RETURN_IF_ERROR(decode(input.upload, &input.image));
  return decode(request->baseline_upload, &request->paths.baseline_image);
}

StatusOr<AttributionsRequest> ParseAttributionsRequest(std::string_view content_type, const QueryParams& query,
                                                       std::string_view body, const AttributionLimits& limits) {
  ASSIGN_OR_RETURN(AttributionsRequest request, ReadAttributionsRequest(content_type, query, body, limits));
  RETURN_IF_ERROR(DecodeUploads(&request, limits));
  return request;
}

StatusOr<std::string> DecodeBase64(std::string_view text) {
  if (text.substr(0, 5) == "data:") {
    const size_t comma = text.find(',');
    if (comma == std::string_view::npos) return InvalidError("a data: URL without a comma");
    text.remove_prefix(comma + 1);
  }
  std::string out;
  out.reserve(text.size() / 4 * 3);
  uint32_t bits = 0;
  int count = 0;
  int padding = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    int value = -1;
    if (c >= 'A' && c <= 'Z')
      value = c - 'A';
    else if (c >= 'a' && c <= 'z')
      value = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      value = c - '0' + 52;
    else if (c == '+' || c == '-')
      value = 62;
    else if (c == '/' || c == '_')
      value = 63;
    else if (c == '=') {
      ++padding;
      continue;
    } else if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
      continue;
    } else {
      return InvalidError("not base64: character " + std::to_string(static_cast<unsigned char>(c)) + " at " +
                          std::to_string(i));
    }
    if (padding > 0) return InvalidError("not base64: data after '=' padding");
    bits = (bits << 6) | static_cast<uint32_t>(value);
    if (++count == 4) {
      out += static_cast<char>((bits >> 16) & 0xff);
      out += static_cast<char>((bits >> 8) & 0xff);
      out += static_cast<char>(bits & 0xff);
      bits = 0;
      count = 0;
    }
  }
  if (count == 1) return InvalidError("not base64: a stray character at the end");
  if (count == 2) out += static_cast<char>((bits >> 4) & 0xff);
  if (count == 3) {
    out += static_cast<char>((bits >> 10) & 0xff);
    out += static_cast<char>((bits >> 2) & 0xff);
  }
  return out;
}

std::string EncodeBase64(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (n > 1) v |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    if (n > 2) v |= static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += n > 1 ? kAlphabet[(v >> 6) & 63] : '=';
    out += n > 2 ? kAlphabet[v & 63] : '=';
  }
  return out;
}

StatusOr<std::vector<FormPart>> ParseMultipart(std::string_view content_type, std::string_view body) {
  const std::string boundary = HeaderParameter(content_type, "boundary");
  if (boundary.empty() || boundary.size() > 200) {
    return InvalidError("multipart: the Content-Type has no usable boundary parameter");
  }
  const std::string delimiter = "--" + boundary;
  std::vector<FormPart> parts;
  size_t at = body.find(delimiter);
  if (at == std::string_view::npos) return InvalidError("multipart: the body never opens with its boundary");
  while (true) {
    at += delimiter.size();
    if (body.substr(at, 2) == "--") return parts;  // the closing delimiter
    if (body.substr(at, 2) != "\r\n") return InvalidError("multipart: a boundary is not followed by a line break");
    at += 2;
    const size_t headers_end = body.find("\r\n\r\n", at);
    if (headers_end == std::string_view::npos) return InvalidError("multipart: a part's headers never end");
    FormPart part;
    std::string_view headers = body.substr(at, headers_end - at);
    while (!headers.empty()) {
      const size_t eol = headers.find("\r\n");
      const std::string_view header = headers.substr(0, eol);
      headers = eol == std::string_view::npos ? std::string_view() : headers.substr(eol + 2);
      const size_t colon = header.find(':');
      if (colon == std::string_view::npos) continue;
      const std::string key = Lower(Trim(header.substr(0, colon)));
      const std::string_view value = Trim(header.substr(colon + 1));
      if (key == "content-disposition") {
        if (MediaType(value) != "form-data") return InvalidError("multipart: a part is not form-data");
        part.name = HeaderParameter(value, "name");
        part.filename = HeaderParameter(value, "filename");
      } else if (key == "content-type") {
        part.content_type = MediaType(value);
      }
    }
    const size_t data_start = headers_end + 4;
    const size_t next = body.find("\r\n" + delimiter, data_start);
    if (next == std::string_view::npos) return InvalidError("multipart: the body ends inside a part (truncated?)");
    part.data = body.substr(data_start, next - data_start);
    if (part.name.empty()) return InvalidError("multipart: a part has no name");
    parts.push_back(part);
    if (parts.size() > 1000) return InvalidError("multipart: more than 1000 parts");
    at = next + 2;
  }
}

StatusOr<Negotiated> NegotiateFormat(std::string_view accept, std::optional<Format> format, size_t results) {
  struct Range {
    std::string type;
    double q = 1.0;
  };
  std::vector<Range> ranges;
  for (size_t start = 0; start <= accept.size();) {
    const size_t comma = std::min(accept.find(',', start), accept.size());
    const std::string_view item = accept.substr(start, comma - start);
    start = comma + 1;
    Range range{MediaType(item)};
    if (range.type.empty()) continue;
    const std::string q = HeaderParameter(item, "q");
    if (!q.empty()) range.q = std::strtod(q.c_str(), nullptr);
    if (range.q > 0) ranges.push_back(range);
  }
  std::stable_sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.q > b.q; });
  auto matches = [](const std::string& range, std::string_view type) {
    if (range == "*/*" || range == type) return true;
    return range.size() > 2 && range.substr(range.size() - 2) == "/*" &&
           type.compare(0, range.size() - 1, range, 0, range.size() - 1) == 0;
  };
  std::vector<std::string> offered;
  for (const auto& f : PayloadFormats()) offered.emplace_back(f.content_type);
  offered.emplace_back("application/zip");
  Negotiated answer;
  if (format) {
    answer.format = &FormatEntry(*format);
    answer.zip = results > 1 && answer.format->zips;
    const std::string type(answer.zip ? "application/zip" : answer.format->content_type);
    if (Trim(accept).empty()) return answer;
    for (const Range& r : ranges) {
      if (matches(r.type, type)) return answer;
    }
    return NotAcceptableError("Accept: the format '" + Name(*format) + "' answers " + type +
                              ", which Accept does not admit; offered: " + JoinNames(offered));
  }
  if (Trim(accept).empty()) ranges.push_back({"*/*"});  // no preference (q=0 everywhere is a refusal)
  for (const Range& r : ranges) {
    if (r.type == "application/zip") {
      answer.format = &FormatEntry(Format::kGzip);
      answer.zip = true;
      return answer;
    }
    for (const PayloadFormat& f : PayloadFormats()) {
      if (matches(r.type, f.content_type)) {
        answer.format = &f;
        answer.zip = results > 1 && f.zips;
        return answer;
      }
    }
  }
  return NotAcceptableError("Accept: none of '" + Shorten(std::string(accept), 128) + "' is offered; offered: " +
                            JoinNames(offered) + " (or set format=" + JoinNames(NamesOf<Format>()) + ")");
}

}  // namespace intgrads
