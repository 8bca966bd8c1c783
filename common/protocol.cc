#include "common/protocol.h"

#include <nlohmann/json.hpp>

#include <type_traits>
#include <utility>

namespace intgrads {

using nlohmann::json;

namespace {

constexpr const char* kTypeNames[] = {"ready", "heartbeat", "request", "reply", "disconnect", "progress"};

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

// A tensor frame is float32 3 x height x width.
Status CheckTensorFrame(int64_t height, int64_t width, int64_t channels, size_t frame_bytes) {
  constexpr int64_t kMaxSide = 1 << 14;
  if (height <= 0 || width <= 0 || height > kMaxSide || width > kMaxSide || channels != 3 ||
      static_cast<uint64_t>(height * width * channels) * sizeof(float) != frame_bytes) {
    return InvalidError("protocol: tensor frame of " + std::to_string(frame_bytes) +
                        " bytes does not match the header's 3 x height x width float32");
  }
  return Status::Ok();
}

// The header fields of each message, listed once for both directions:
// visit(key, member, presence), with the struct const when encoding. A peer
// may omit an optional field (an older peer did not know it): the member
// keeps its default then.
enum class Presence { kRequired, kOptional };

template <typename Info, typename Visit>
void ReadyFields(Info& i, Visit&& visit) {
  visit("model", i.model, Presence::kRequired);
  visit("family", i.family, Presence::kRequired);
  visit("variant", i.variant, Presence::kRequired);
  visit("device", i.device, Presence::kRequired);
  visit("classes", i.classes, Presence::kRequired);
  visit("input_size", i.input_size, Presence::kRequired);
  visit("mean", i.mean, Presence::kOptional);
  visit("std", i.std, Presence::kOptional);
  visit("slots", i.slots, Presence::kOptional);
}

// All but the image frames' shapes and the baseline image, which go with the frames.
template <typename Request, typename Visit>
void RequestFields(Request& r, Visit&& visit) {
  visit("id", r.id, Presence::kRequired);
  visit("target", r.target, Presence::kRequired);
  visit("n_steps", r.n_steps, Presence::kRequired);
  visit("method", r.method, Presence::kRequired);
  visit("height", r.image.height, Presence::kRequired);
  visit("width", r.image.width, Presence::kRequired);
  visit("channels", r.image.channels, Presence::kRequired);
  visit("format", r.format, Presence::kOptional);
  visit("heatmap", r.heatmap, Presence::kOptional);
  visit("baseline", r.paths.baseline, Presence::kOptional);
  visit("blur_sigma", r.paths.blur_sigma, Presence::kOptional);
  visit("baseline_count", r.paths.baseline_count, Presence::kOptional);
  visit("smoothgrad_samples", r.paths.smoothgrad_samples, Presence::kOptional);
  visit("smoothgrad_sigma", r.paths.smoothgrad_sigma, Presence::kOptional);
  visit("seed", r.paths.seed, Presence::kOptional);
  visit("tolerance", r.paths.tolerance, Presence::kOptional);
  visit("targets", r.targets, Presence::kOptional);
  visit("top_k", r.top_k, Presence::kOptional);
  visit("regions", r.regions.kind, Presence::kOptional);
  visit("region_min_side", r.regions.min_side, Presence::kOptional);
  visit("segments", r.regions.segments, Presence::kOptional);
  visit("top_regions", r.regions.top, Presence::kOptional);
  visit("max_reply_bytes", r.max_reply_bytes, Presence::kOptional);
  visit("predict", r.predict, Presence::kOptional);
  visit("sign", r.sign, Presence::kOptional);
  visit("outlier_perc", r.outlier_perc, Presence::kOptional);
  visit("progress_ms", r.progress_ms, Presence::kOptional);
}

template <typename Progress, typename Visit>
void ProgressFields(Progress& p, Visit&& visit) {
  visit("id", p.id, Presence::kRequired);
  visit("done", p.done, Presence::kRequired);
  visit("total", p.total, Presence::kRequired);
  visit("seconds", p.seconds, Presence::kRequired);
  visit("side", p.side, Presence::kOptional);
}

template <typename ImageT, typename Visit>
void BaselineImageFields(ImageT& b, Visit&& visit) {
  visit("baseline_height", b.height, Presence::kRequired);
  visit("baseline_width", b.width, Presence::kRequired);
  visit("baseline_channels", b.channels, Presence::kRequired);
}

// All but the other targets' replies, each with fields of its own.
template <typename Reply, typename Visit>
void ReplyFields(Reply& r, Visit&& visit) {
  visit("id", r.id, Presence::kRequired);
  visit("code", r.code, Presence::kRequired);
  visit("error", r.error, Presence::kRequired);
  visit("convergence_delta", r.convergence_delta, Presence::kRequired);
  visit("compute_seconds", r.compute_seconds, Presence::kRequired);
  visit("prepare_seconds", r.prepare_seconds, Presence::kOptional);
  visit("attribute_seconds", r.attribute_seconds, Presence::kOptional);
  visit("encode_seconds", r.encode_seconds, Presence::kOptional);
  visit("compress_seconds", r.compress_seconds, Presence::kOptional);
  visit("wait_seconds", r.wait_seconds, Presence::kOptional);
  visit("copy_seconds", r.copy_seconds, Presence::kOptional);
  visit("target", r.target, Presence::kOptional);
  visit("probabilities", r.probabilities, Presence::kOptional);
  visit("content_type", r.content_type, Presence::kOptional);
  visit("n_steps_used", r.n_steps, Presence::kOptional);
  visit("tolerance_met", r.tolerance_met, Presence::kOptional);
}

template <typename Reply, typename Visit>
void OtherReplyFields(Reply& r, Visit&& visit) {
  visit("target", r.target, Presence::kRequired);
  visit("convergence_delta", r.convergence_delta, Presence::kRequired);
  visit("n_steps_used", r.n_steps, Presence::kOptional);
  visit("tolerance_met", r.tolerance_met, Presence::kOptional);
}

// An enum on the wire: a status code or a request's word, by name.
std::string WireName(StatusCode code) { return StatusCodeName(code); }
template <typename E>
std::string WireName(E value) {
  return Name(value);
}
template <typename E>
std::optional<E> FromWireName(const std::string& name) {
  if constexpr (std::is_same_v<E, StatusCode>) {
    return StatusCodeFromName(name);
  } else {
    return FromName<E>(name);
  }
}

// Writes the fields a table visits into a header; a bool as 0 or 1, an enum by its name.
struct FieldWriter {
  json* header;
  template <typename T>
  void operator()(const char* key, const T& value, Presence /*presence*/) const {
    if constexpr (std::is_same_v<T, bool>) {
      (*header)[key] = value ? 1 : 0;
    } else if constexpr (std::is_enum_v<T>) {
      (*header)[key] = WireName(value);
    } else {
      (*header)[key] = value;
    }
  }
};

// Reads the fields a table visits from a header; the first error is kept.
class FieldReader {
 public:
  explicit FieldReader(const json& header) : header_(header) {}

  template <typename T>
  void operator()(const char* key, T& out, Presence presence) {
    if (!status_.ok()) return;
    if constexpr (std::is_same_v<T, bool>) {
      int value = out ? 1 : 0;
      (*this)(key, value, presence);
      out = value != 0;
    } else if constexpr (std::is_enum_v<T>) {
      std::string name = WireName(out);
      (*this)(key, name, presence);
      const std::optional<T> value = FromWireName<T>(name);
      if (status_.ok() && !value.has_value()) {
        status_ =
            InvalidError(std::string("protocol: '") + key + "' is none of its names: '" + Shorten(name, 32) + "'");
      } else if (value.has_value()) {
        out = *value;
      }
    } else {
      status_ = presence == Presence::kRequired ? Field(header_, key, &out) : OptionalField(header_, key, &out);
    }
  }
  const Status& status() const { return status_; }

 private:
  const json& header_;
  Status status_;
};

}  // namespace

Frames EncodeReady(const WorkerInfo& info) {
  json h = Header(MessageType::kReady);
  ReadyFields(info, FieldWriter{&h});
  return {Dump(h)};
}

Frames EncodeHeartbeat() { return {Dump(Header(MessageType::kHeartbeat))}; }
Frames EncodeDisconnect() { return {Dump(Header(MessageType::kDisconnect))}; }

Frames EncodeRequest(const JobRequest& r) {
  json h = Header(MessageType::kRequest);
  RequestFields(r, FieldWriter{&h});
  const Image& b = r.paths.baseline_image;
  // "input": what the first frame holds, an image (the default) or a tensor.
  if (!r.tensor.empty()) h["input"] = "tensor";
  std::string first = r.tensor.empty() ? std::string(r.image.pixels.begin(), r.image.pixels.end()) : r.tensor;
  if (b.pixels.empty()) return {Dump(h), std::move(first)};
  BaselineImageFields(b, FieldWriter{&h});
  return {Dump(h), std::move(first), std::string(b.pixels.begin(), b.pixels.end())};
}

Frames EncodeProgress(JobProgress p) {
  json h = Header(MessageType::kProgress);
  if (p.ig.empty()) p.side = 0;
  ProgressFields(std::as_const(p), FieldWriter{&h});
  if (p.ig.empty()) return {Dump(h)};
  return {Dump(h), std::move(p.ig)};
}

Frames EncodeReply(JobReply r) {
  json h = Header(MessageType::kReply);
  ReplyFields(std::as_const(r), FieldWriter{&h});
  Frames frames = {"", std::move(r.payload)};
  if (!r.others.empty()) {
    json others = json::array();
    for (JobReply& o : r.others) {
      json other = json::object();
      OtherReplyFields(std::as_const(o), FieldWriter{&other});
      others.push_back(std::move(other));
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
    FieldReader read(h);
    ReadyFields(m.ready, read);
    RETURN_IF_ERROR(read.status());
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
    FieldReader read(h);
    RequestFields(r, read);
    RETURN_IF_ERROR(read.status());
    std::string input = "image";
    RETURN_IF_ERROR(OptionalField(h, "input", &input));
    Image& image = r.image;
    if (input == "tensor") {
      RETURN_IF_ERROR(CheckTensorFrame(image.height, image.width, image.channels, frames[1].size()));
      r.tensor = std::move(frames[1]);
    } else if (input == "image") {
      RETURN_IF_ERROR(CheckImageFrame(image.height, image.width, image.channels, frames[1].size(), "image"));
      image.pixels.assign(frames[1].begin(), frames[1].end());
    } else {
      return InvalidError("protocol: input '" + input.substr(0, 32) + "' is not image or tensor");
    }
    if (frames.size() == 3) {
      Image& b = r.paths.baseline_image;
      BaselineImageFields(b, read);
      RETURN_IF_ERROR(read.status());
      RETURN_IF_ERROR(CheckImageFrame(b.height, b.width, b.channels, frames[2].size(), "baseline"));
      b.pixels.assign(frames[2].begin(), frames[2].end());
    }
  } else if (type == "progress") {
    m.type = MessageType::kProgress;
    if (frames.size() != 2) RETURN_IF_ERROR(ExpectFrames(frames, 1, "progress"));
    FieldReader read(h);
    ProgressFields(m.progress, read);
    RETURN_IF_ERROR(read.status());
    JobProgress& p = m.progress;
    if (p.done < 0 || p.total < 0 || p.done > p.total) return InvalidError("protocol: progress past its total");
    if (frames.size() == 2) {
      RETURN_IF_ERROR(CheckTensorFrame(p.side, p.side, 3, frames[1].size()));
      p.ig = std::move(frames[1]);
    }
  } else if (type == "reply") {
    m.type = MessageType::kReply;
    JobReply& r = m.reply;
    const json others = h.contains("others") ? h["others"] : json::array();
    if (!others.is_array()) return InvalidError("protocol: 'others' is not a list");
    RETURN_IF_ERROR(ExpectFrames(frames, 2 + others.size(), "reply"));
    FieldReader read(h);
    ReplyFields(r, read);
    RETURN_IF_ERROR(read.status());
    r.payload = std::move(frames[1]);
    for (size_t i = 0; i < others.size(); ++i) {
      if (!others[i].is_object()) return InvalidError("protocol: an entry of 'others' is not an object");
      JobReply o;
      o.id = r.id;
      o.content_type = r.content_type;
      o.probabilities = r.probabilities;
      o.compute_seconds = r.compute_seconds;
      FieldReader read_other(others[i]);
      OtherReplyFields(o, read_other);
      RETURN_IF_ERROR(read_other.status());
      o.payload = std::move(frames[2 + i]);
      r.others.push_back(std::move(o));
    }
  } else {
    return InvalidError("protocol: unknown message type '" + type.substr(0, 32) + "'");
  }
  return m;
}

std::optional<uint64_t> RefusedRequestId(const Frames& frames) {
  if (frames.empty()) return std::nullopt;
  const json h = json::parse(frames[0], nullptr, /*allow_exceptions=*/false);
  if (h.is_discarded() || !h.is_object() || h.value("type", json()) != "request") return std::nullopt;
  uint64_t id = 0;
  if (!Field(h, "id", &id).ok()) return std::nullopt;
  return id;
}

}  // namespace intgrads
