#include "common/protocol.h"

#include <nlohmann/json.hpp>

namespace intgrads {

using nlohmann::json;

namespace {

constexpr const char* kTypeNames[] = {"ready", "heartbeat", "request", "reply", "disconnect"};

// Strings in headers may come from users (a class name, a model name):
// invalid UTF-8 is replaced, never thrown on.
std::string Dump(const json& header) { return header.dump(-1, ' ', false, json::error_handler_t::replace); }

json Header(MessageType type) { return json{{"v", kProtocolVersion}, {"type", kTypeNames[static_cast<int>(type)]}}; }

// Whether a JSON value is a T, and what a T is called in messages. The
// elements of an integer list must also fit T (a scalar header field is read
// as it always was).
template <typename T, bool kElement = false>
bool Is(const json& v) {
  if constexpr (std::is_same_v<T, std::string>) {
    return v.is_string();
  } else if constexpr (std::is_floating_point_v<T>) {
    return v.is_number();
  } else {
    return v.is_number_integer() && (!kElement || v.get<int64_t>() == static_cast<int64_t>(v.get<T>()));
  }
}
template <typename T>
const char* Called() {
  if constexpr (std::is_same_v<T, std::string>) return "a string";
  if constexpr (std::is_floating_point_v<T>) return "a number";
  return "an integer";
}

template <typename T>
struct IsList : std::false_type {};
template <typename E>
struct IsList<std::vector<E>> : std::true_type {};

// Reads header[key] as T (a string, a number, or a list of them), or
// explains what is wrong.
template <typename T>
Status Field(const json& header, const char* key, T* out) {
  const auto it = header.find(key);
  if (it == header.end()) return InvalidError(std::string("protocol: header lacks '") + key + "'");
  if constexpr (IsList<T>::value) {
    using E = typename T::value_type;
    if (!it->is_array()) return InvalidError(std::string("protocol: '") + key + "' is not a list");
    for (const auto& e : *it) {
      if (!Is<E, true>(e))
        return InvalidError(std::string("protocol: '") + key + "' holds something not " + Called<E>());
    }
  } else if (!Is<T>(*it)) {
    return InvalidError(std::string("protocol: '") + key + "' is not " + Called<T>());
  }
  *out = it->get<T>();
  return Status::Ok();
}

// Field for a key a peer may omit: `out` keeps its default then.
template <typename T>
Status OptionalField(const json& header, const char* key, T* out) {
  return header.contains(key) ? Field(header, key, out) : Status::Ok();
}

Status ExpectFrames(const Frames& frames, size_t count, const char* type) {
  if (frames.size() != count) {
    return InvalidError(std::string("protocol: a ") + type + " message has " + std::to_string(count) + " frames, got " +
                        std::to_string(frames.size()));
  }
  return Status::Ok();
}

// An image frame's bytes must be height x width x channels, channels 1, 3 or 4.
Status CheckImageFrame(int64_t height, int64_t width, int64_t channels, size_t frame_bytes, const char* what) {
  if (height <= 0 || width <= 0 || (channels != 1 && channels != 3 && channels != 4) ||
      static_cast<uint64_t>(height) * static_cast<uint64_t>(width) * static_cast<uint64_t>(channels) != frame_bytes) {
    return InvalidError(std::string("protocol: ") + what + " frame of " + std::to_string(frame_bytes) +
                        " bytes does not match the header's " + what + " shape");
  }
  return Status::Ok();
}

}  // namespace

const std::vector<PayloadFormat>& PayloadFormats() {
  static const std::vector<PayloadFormat> formats = {
      {"gzip", "application/gzip", ".gzip"},
      {"npz", "application/x-npz", ".npz"},
      {"json", "application/json", ".json"},
      {"png", "image/png", ".png"},
  };
  return formats;
}

const PayloadFormat* FindPayloadFormat(const std::string& name) {
  for (const PayloadFormat& f : PayloadFormats()) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

Frames EncodeReady(const WorkerInfo& info) {
  json h = Header(MessageType::kReady);
  h["model"] = info.model;
  h["family"] = info.family;
  h["variant"] = info.variant;
  h["device"] = info.device;
  h["classes"] = info.classes;
  h["input_size"] = info.input_size;
  h["token"] = info.token;
  h["mean"] = info.mean;
  h["std"] = info.std;
  h["slots"] = info.slots;
  return {Dump(h)};
}

Frames EncodeHeartbeat() { return {Dump(Header(MessageType::kHeartbeat))}; }
Frames EncodeDisconnect() { return {Dump(Header(MessageType::kDisconnect))}; }

Frames EncodeRequest(const JobRequest& r) {
  json h = Header(MessageType::kRequest);
  h["id"] = r.id;
  h["target"] = r.target;
  h["n_steps"] = r.n_steps;
  h["method"] = r.method;
  h["height"] = r.height;
  h["width"] = r.width;
  h["channels"] = r.channels;
  h["format"] = r.format;
  h["heatmap"] = r.heatmap;
  const PathRequest& p = r.paths;
  h["baseline"] = p.baseline;
  h["blur_sigma"] = p.blur_sigma;
  h["baseline_count"] = p.baseline_count;
  h["smoothgrad_samples"] = p.smoothgrad_samples;
  h["smoothgrad_sigma"] = p.smoothgrad_sigma;
  h["seed"] = p.seed;
  h["tolerance"] = p.tolerance;
  if (!r.targets.empty()) h["targets"] = r.targets;
  if (r.top_k > 0) h["top_k"] = r.top_k;
  if (r.regions.kind != "none") {
    h["regions"] = r.regions.kind;
    h["region_min_side"] = r.regions.min_side;
    h["segments"] = r.regions.segments;
    h["top_regions"] = r.regions.top;
  }
  if (p.baseline_image.pixels.empty()) return {Dump(h), r.pixels};
  h["baseline_height"] = p.baseline_image.height;
  h["baseline_width"] = p.baseline_image.width;
  h["baseline_channels"] = p.baseline_image.channels;
  return {Dump(h), r.pixels, std::string(p.baseline_image.pixels.begin(), p.baseline_image.pixels.end())};
}

Frames EncodeReply(JobReply r) {
  json h = Header(MessageType::kReply);
  h["id"] = r.id;
  h["status"] = r.status;
  h["error"] = r.error;
  h["convergence_delta"] = r.convergence_delta;
  h["compute_seconds"] = r.compute_seconds;
  h["prepare_seconds"] = r.prepare_seconds;
  h["attribute_seconds"] = r.attribute_seconds;
  h["encode_seconds"] = r.encode_seconds;
  h["compress_seconds"] = r.compress_seconds;
  h["target"] = r.target;
  h["probabilities"] = r.probabilities;
  h["content_type"] = r.content_type;
  h["n_steps_used"] = r.n_steps;
  h["tolerance_met"] = r.tolerance_met ? 1 : 0;
  Frames frames = {"", std::move(r.payload)};
  if (!r.others.empty()) {
    json others = json::array();
    for (JobReply& o : r.others) {
      others.push_back({{"target", o.target},
                        {"convergence_delta", o.convergence_delta},
                        {"n_steps_used", o.n_steps},
                        {"tolerance_met", o.tolerance_met ? 1 : 0}});
      frames.push_back(std::move(o.payload));
    }
    h["others"] = std::move(others);
  }
  frames[0] = Dump(h);
  return frames;
}

StatusOr<Message> DecodeMessage(Frames frames) {
  if (frames.empty()) return InvalidError("protocol: empty message");
  const json h = json::parse(frames[0], nullptr, /*allow_exceptions=*/false);
  if (h.is_discarded() || !h.is_object()) return InvalidError("protocol: header is not a JSON object");
  int version = 0;
  RETURN_IF_ERROR(Field(h, "v", &version));
  if (version != kProtocolVersion) {
    return InvalidError("protocol: version " + std::to_string(version) + " is not ours (" +
                        std::to_string(kProtocolVersion) + "); upgrade gateway and workers together");
  }
  std::string type;
  RETURN_IF_ERROR(Field(h, "type", &type));
  Message m;
  if (type == "ready") {
    m.type = MessageType::kReady;
    RETURN_IF_ERROR(ExpectFrames(frames, 1, "ready"));
    RETURN_IF_ERROR(Field(h, "model", &m.ready.model));
    RETURN_IF_ERROR(Field(h, "family", &m.ready.family));
    RETURN_IF_ERROR(Field(h, "variant", &m.ready.variant));
    RETURN_IF_ERROR(Field(h, "device", &m.ready.device));
    RETURN_IF_ERROR(Field(h, "classes", &m.ready.classes));
    RETURN_IF_ERROR(Field(h, "input_size", &m.ready.input_size));
    RETURN_IF_ERROR(Field(h, "token", &m.ready.token));
    RETURN_IF_ERROR(OptionalField(h, "mean", &m.ready.mean));
    RETURN_IF_ERROR(OptionalField(h, "std", &m.ready.std));
    RETURN_IF_ERROR(OptionalField(h, "slots", &m.ready.slots));
    if (m.ready.classes.empty()) return InvalidError("protocol: a ready message with no classes");
    if (m.ready.slots < 1 || m.ready.slots > kMaxSlots) {
      return InvalidError("protocol: slots " + std::to_string(m.ready.slots) + " is not in 1.." +
                          std::to_string(kMaxSlots));
    }
  } else if (type == "heartbeat" || type == "disconnect") {
    m.type = type == "heartbeat" ? MessageType::kHeartbeat : MessageType::kDisconnect;
    RETURN_IF_ERROR(ExpectFrames(frames, 1, type.c_str()));
  } else if (type == "request") {
    m.type = MessageType::kRequest;
    if (frames.size() != 3) RETURN_IF_ERROR(ExpectFrames(frames, 2, "request"));
    JobRequest& r = m.request;
    RETURN_IF_ERROR(Field(h, "id", &r.id));
    RETURN_IF_ERROR(Field(h, "target", &r.target));
    RETURN_IF_ERROR(Field(h, "n_steps", &r.n_steps));
    RETURN_IF_ERROR(Field(h, "method", &r.method));
    RETURN_IF_ERROR(Field(h, "height", &r.height));
    RETURN_IF_ERROR(Field(h, "width", &r.width));
    RETURN_IF_ERROR(Field(h, "channels", &r.channels));
    RETURN_IF_ERROR(OptionalField(h, "format", &r.format));
    RETURN_IF_ERROR(OptionalField(h, "heatmap", &r.heatmap));
    RETURN_IF_ERROR(CheckImageFrame(r.height, r.width, r.channels, frames[1].size(), "image"));
    r.pixels = std::move(frames[1]);
    PathRequest& p = r.paths;
    RETURN_IF_ERROR(OptionalField(h, "baseline", &p.baseline));
    RETURN_IF_ERROR(OptionalField(h, "blur_sigma", &p.blur_sigma));
    RETURN_IF_ERROR(OptionalField(h, "baseline_count", &p.baseline_count));
    RETURN_IF_ERROR(OptionalField(h, "smoothgrad_samples", &p.smoothgrad_samples));
    RETURN_IF_ERROR(OptionalField(h, "smoothgrad_sigma", &p.smoothgrad_sigma));
    RETURN_IF_ERROR(OptionalField(h, "seed", &p.seed));
    RETURN_IF_ERROR(OptionalField(h, "tolerance", &p.tolerance));
    RETURN_IF_ERROR(OptionalField(h, "targets", &r.targets));
    RETURN_IF_ERROR(OptionalField(h, "top_k", &r.top_k));
    RETURN_IF_ERROR(OptionalField(h, "regions", &r.regions.kind));
    RETURN_IF_ERROR(OptionalField(h, "region_min_side", &r.regions.min_side));
    RETURN_IF_ERROR(OptionalField(h, "segments", &r.regions.segments));
    RETURN_IF_ERROR(OptionalField(h, "top_regions", &r.regions.top));
    if (frames.size() == 3) {
      Image& b = p.baseline_image;
      RETURN_IF_ERROR(Field(h, "baseline_height", &b.height));
      RETURN_IF_ERROR(Field(h, "baseline_width", &b.width));
      RETURN_IF_ERROR(Field(h, "baseline_channels", &b.channels));
      RETURN_IF_ERROR(CheckImageFrame(b.height, b.width, b.channels, frames[2].size(), "baseline"));
      b.pixels.assign(frames[2].begin(), frames[2].end());
    }
  } else if (type == "reply") {
    m.type = MessageType::kReply;
    JobReply& r = m.reply;
    const json others = h.contains("others") ? h["others"] : json::array();
    if (!others.is_array()) return InvalidError("protocol: 'others' is not a list");
    RETURN_IF_ERROR(ExpectFrames(frames, 2 + others.size(), "reply"));
    RETURN_IF_ERROR(Field(h, "id", &r.id));
    RETURN_IF_ERROR(Field(h, "status", &r.status));
    RETURN_IF_ERROR(Field(h, "error", &r.error));
    RETURN_IF_ERROR(Field(h, "convergence_delta", &r.convergence_delta));
    RETURN_IF_ERROR(Field(h, "compute_seconds", &r.compute_seconds));
    RETURN_IF_ERROR(OptionalField(h, "prepare_seconds", &r.prepare_seconds));
    RETURN_IF_ERROR(OptionalField(h, "attribute_seconds", &r.attribute_seconds));
    RETURN_IF_ERROR(OptionalField(h, "encode_seconds", &r.encode_seconds));
    RETURN_IF_ERROR(OptionalField(h, "compress_seconds", &r.compress_seconds));
    RETURN_IF_ERROR(OptionalField(h, "target", &r.target));
    RETURN_IF_ERROR(OptionalField(h, "probabilities", &r.probabilities));
    RETURN_IF_ERROR(OptionalField(h, "content_type", &r.content_type));
    RETURN_IF_ERROR(OptionalField(h, "n_steps_used", &r.n_steps));
    int met = 1;
    RETURN_IF_ERROR(OptionalField(h, "tolerance_met", &met));
    r.tolerance_met = met != 0;
    r.payload = std::move(frames[1]);
    for (size_t i = 0; i < others.size(); ++i) {
      if (!others[i].is_object()) return InvalidError("protocol: an entry of 'others' is not an object");
      JobReply o;
      o.id = r.id;
      o.content_type = r.content_type;
      o.probabilities = r.probabilities;
      o.compute_seconds = r.compute_seconds;
      RETURN_IF_ERROR(Field(others[i], "target", &o.target));
      RETURN_IF_ERROR(Field(others[i], "convergence_delta", &o.convergence_delta));
      RETURN_IF_ERROR(OptionalField(others[i], "n_steps_used", &o.n_steps));
      int other_met = 1;
      RETURN_IF_ERROR(OptionalField(others[i], "tolerance_met", &other_met));
      o.tolerance_met = other_met != 0;
      o.payload = std::move(frames[2 + i]);
      r.others.push_back(std::move(o));
    }
  } else {
    return InvalidError("protocol: unknown message type '" + type.substr(0, 32) + "'");
  }
  return m;
}

}  // namespace intgrads
