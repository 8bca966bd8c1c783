// The attribution routes (gateway/http_api.h): the original's POST /model/
// and POST /v1/attributions, and RunAttributions, which the protocols'
// routes (gateway/protocol_routes.cc) share: a request's inputs as jobs, one
// per image, answered together once the last reply is in.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <optional>

#include "common/job.h"
#include "common/text.h"
#include "common/zip.h"
#include "gateway/exchange.h"
#include "gateway/http_api.h"

namespace intgrads {

using nlohmann::json;
using Pistache::Http::Mime::MediaType;

namespace {

// How often a streamed request's worker reports its progress.
constexpr int kProgressMs = 250;

}  // namespace

void HttpApi::PostModel(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange) {
  auto body = std::make_shared<std::string>(TakeBody(request));
  if (!BodyWithinLimit(*body, *exchange)) return;
  std::string name = request.hasParam(":name") ? request.param(":name").as<std::string>() : "";
  Offload(exchange, body->size() * kJsonMemoryFactor,
          [this, exchange, name = std::move(name), body] { AnswerModel(exchange, name, *body); });
}

void HttpApi::AnswerModel(const std::shared_ptr<Exchange>& exchange, const std::string& name, const std::string& body) {
  auto model = ResolveModel(name);
  if (!model.ok()) {
    exchange->Error(HttpStatusOf(model.status()), model.status().message());
    return;
  }
  // Validate against the model's classes (CIFAR-10 until a worker has announced one).
  const std::vector<std::string> classes = broker_.Classes(*model).value_or(Cifar10Classes());
  auto parsed = ParseModelRequest(body, classes, options_.limits);
  if (!parsed.ok()) {
    exchange->Error(HttpStatusOf(parsed.status()), parsed.status().message());
    return;
  }
  // The pixels stay in the job until it is answered: a share of the budget until then.
  auto held = Reserve(parsed->image.pixels.size(), *exchange);
  if (held == nullptr) return;
  exchange->Hold(std::move(held));
  // The original's request: its class, steps and rule, every other option the original's.
  AttributionsRequest options;
  options.n_steps = parsed->n_steps;
  options.method = parsed->method;
  AttributionInput input;
  input.image = std::move(parsed->image);
  Job job;
  job.model = *model;
  job.request = MakeJobRequest(options, {parsed->target}, Format::kGzip, false, &input);
  if (Status valid = ValidateJob(job.request, static_cast<int>(classes.size()), options_.limits); !valid.ok()) {
    exchange->Error(HttpStatusOf(valid), valid.message());
    return;
  }
  job.deadline = exchange->received() + std::chrono::milliseconds(options_.request_timeout_ms);
  job.abandoned = [exchange] { return exchange->gone(); };
  const int n_steps = parsed->n_steps;
  const double decode = std::chrono::duration<double>(Clock::now() - exchange->received()).count();
  job.done = [this, exchange, n_steps, decode](JobReply reply) {
    if (!reply.ok()) {
      exchange->Error(HttpStatusOf(reply.status()), reply.error);
      return;
    }
    metrics_.AddAttribution(n_steps);
    const auto stages =
        Stages(reply, decode, std::chrono::duration<double>(Clock::now() - exchange->received()).count());
    metrics_.RecordStages(stages);
    exchange->Header("Server-Timing", ServerTiming(stages));
    exchange->Header("Content-Disposition", "attachment; filename=\"returned_gradients.gzip\"");
    exchange->Header("X-Convergence-Delta", Printf("%.9g", reply.convergence_delta));
    exchange->Header("X-Compute-Seconds", Printf("%.6f", reply.compute_seconds));
    exchange->Send(200, std::move(reply.payload), MediaType::fromString(reply.content_type));
  };
  Status submitted = broker_.Submit(std::move(job));
  if (!submitted.ok()) exchange->Error(503, submitted.message());
}

namespace {

// A file name's stem, safe in a zip or a header: "my cat.jpg" -> "my_cat".
std::string SafeStem(const std::string& name) {
  std::string safe;
  for (char c : name.substr(0, name.rfind('.')).substr(0, 64)) {
    const bool plain = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
    safe += plain ? c : '_';
  }
  return safe;
}

// The file of image `index` in a zip: 000-cat.npz, 001.npz.
std::string ZipStem(const std::string& name, size_t index) {
  char number[24];
  std::snprintf(number, sizeof(number), "%03zu", index);
  const std::string stem = SafeStem(name);
  return std::string(number) + (stem.empty() ? "" : "-" + stem);
}

json Summary(const JobReply& reply, const std::vector<std::string>& classes, size_t index, const std::string& name) {
  // (index: the image's, in the request's order.)
  const auto& p = reply.probabilities;
  const int predicted = p.empty() ? -1 : static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
  auto class_name = [&classes](int i) { return i >= 0 && i < static_cast<int>(classes.size()) ? classes[i] : ""; };
  const double probability = reply.target >= 0 && reply.target < static_cast<int>(p.size()) ? p[reply.target] : 0.0;
  return json{{"index", index},
              {"name", name},
              {"target_class", reply.target},
              {"target_name", class_name(reply.target)},
              {"probability", probability},
              {"predicted_class", predicted},
              {"predicted_name", class_name(predicted)},
              {"convergence_delta", reply.convergence_delta},
              {"n_steps", reply.n_steps},
              {"tolerance_met", reply.tolerance_met},
              {"compute_seconds", reply.compute_seconds}};
}

// The first failed reply's status and message ("image N: ..." with several images), if one failed.
std::optional<std::pair<int, std::string>> FirstFailure(const Gathering& g) {
  const size_t images = g.replies.size();
  for (size_t i = 0; i < images; ++i) {
    const JobReply& r = g.replies[i];
    if (!r.ok()) {
      return std::make_pair(HttpStatusOf(r.status()),
                            (images > 1 ? "image " + std::to_string(i) + ": " : std::string()) + r.error);
    }
  }
  return std::nullopt;
}

// Counts the results in the metrics; the Server-Timing header of the first.
std::string RecordResults(const Gathering& g, Metrics& metrics, Clock::time_point received) {
  const double total = std::chrono::duration<double>(Clock::now() - received).count();
  for (const JobReply& r : g.replies) {
    metrics.RecordStages(Stages(r, g.decode, total));
    if (g.predict) continue;
    metrics.AddAttribution(r.n_steps > 0 ? r.n_steps : g.n_steps);
    for (const JobReply& other : r.others) metrics.AddAttribution(other.n_steps > 0 ? other.n_steps : g.n_steps);
  }
  return ServerTiming(Stages(g.replies.front(), g.decode, total));
}

// An answer before it is sent: its headers, body and type.
struct Composed {
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string content_type;
};

// The /v1 answer: one result in its format, several in a zip (or one JSON document).
Composed Compose(Gathering& g) {
  const size_t images = g.replies.size();
  // Every result in order: image by image, each image's targets in turn.
  struct Result {
    const JobReply* reply;
    size_t image;
  };
  std::vector<Result> results;
  for (size_t i = 0; i < images; ++i) {
    results.push_back({&g.replies[i], i});
    for (const JobReply& other : g.replies[i].others) results.push_back({&other, i});
  }
  const PayloadFormat& format = *g.negotiated.format;
  Composed out;
  if (results.size() == 1 && !g.negotiated.zip) {
    JobReply& r = g.replies.front();
    const json summary = Summary(r, g.classes, 0, g.names.front());
    out.headers = {{"X-Target-Class", std::to_string(r.target)},
                   {"X-Target-Name", summary["target_name"].get<std::string>()},
                   {"X-Probability", Printf("%.6g", summary["probability"].get<double>())},
                   {"X-Predicted-Class", std::to_string(summary["predicted_class"].get<int>())},
                   {"X-Predicted-Name", summary["predicted_name"].get<std::string>()},
                   {"X-Convergence-Delta", Printf("%.9g", r.convergence_delta)},
                   {"X-Compute-Seconds", Printf("%.6f", r.compute_seconds)},
                   {"X-N-Steps", std::to_string(r.n_steps)}};
    if (!r.tolerance_met) out.headers.emplace_back("X-Tolerance-Met", "false");
    const std::string stem = SafeStem(g.names.front());
    out.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + (stem.empty() ? "" : stem + "-") +
                                                        "attribution" + std::string(format.extension) + "\"");
    out.body = std::move(r.payload);
    out.content_type = r.content_type;
    return out;
  }
  json summaries = json::array();
  for (const Result& r : results) summaries.push_back(Summary(*r.reply, g.classes, r.image, g.names[r.image]));
  if (!g.negotiated.zip) {  // JSON: one document, the results in order
    out.body = "{\"summary\":" + DumpJson(summaries) + ",\"results\":[";
    for (size_t i = 0; i < results.size(); ++i) out.body += (i > 0 ? "," : "") + results[i].reply->payload;
    out.body += "]}";
    out.content_type = "application/json";
    return out;
  }
  ZipWriter zip;
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    // 000-cat.npz; with several targets per image, 000-cat-dog.npz.
    std::string file = ZipStem(g.names[r.image], r.image);
    if (!g.replies[r.image].others.empty()) file += "-" + SafeStem(summaries[i]["target_name"].get<std::string>());
    file += format.extension;
    summaries[i]["file"] = file;
    zip.Add(file, r.reply->payload);
  }
  zip.Add("summary.json", DumpJson(summaries));
  out.headers.emplace_back("Content-Disposition", "attachment; filename=\"attributions.zip\"");
  out.body = zip.Finish();
  out.content_type = "application/zip";
  return out;
}

// channels x side x side floats as nested JSON lists, each in its shortest
// float32 form (non-finite ones as null, as JSON has no form for them).
std::string NestedFloats(const std::vector<float>& values, size_t channels, size_t side) {
  std::string out;
  out.reserve(values.size() * 12);
  char number[32];
  out += '[';
  for (size_t c = 0; c < channels; ++c) {
    out += c > 0 ? ",[" : "[";
    for (size_t y = 0; y < side; ++y) {
      out += y > 0 ? ",[" : "[";
      for (size_t x = 0; x < side; ++x) {
        const float v = values[(c * side + y) * side + x];
        if (x > 0) out += ',';
        if (!std::isfinite(v)) {
          out += "null";
          continue;
        }
        const auto written = std::to_chars(number, number + sizeof(number), v);
        out.append(number, written.ptr);
      }
      out += ']';
    }
    out += ']';
  }
  return out + ']';
}

// A streamed answer (RunOptions::stream): Server-Sent Events or NDJSON
// lines, each a JSON object with an "event": progress events while the
// passes run, then one result (or error) event. The stream starts with the
// first event; a request that fails before then is answered as usual.
class EventStream {
 public:
  EventStream(std::shared_ptr<Exchange> exchange, std::string kind, size_t images, int64_t ig_budget)
      : exchange_(std::move(exchange)), kind_(std::move(kind)), images_(images), ig_budget_(ig_budget) {}

  void Progress(size_t image, const JobProgress& p) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (ended_) return;
    json event = {{"event", "progress"}, {"image", image},   {"images", images_},
                  {"done", p.done},      {"total", p.total}, {"elapsed_seconds", p.seconds}};
    if (p.done > 0) event["seconds_left"] = p.seconds * static_cast<double>(p.total - p.done) / p.done;
    std::string text = DumpJson(event);
    if (p.side > 0 && ig_sent_ < ig_budget_) {
      // The IG so far, 3 x S x S, as the result's integrated_grads[0] (float32, shortest form).
      std::vector<float> values(p.ig.size() / sizeof(float));
      std::memcpy(values.data(), p.ig.data(), values.size() * sizeof(float));
      const std::string ig = NestedFloats(values, 3, static_cast<size_t>(p.side));
      if (ig_sent_ + static_cast<int64_t>(ig.size()) <= ig_budget_) {
        text.pop_back();
        text += ",\"integrated_grads\":" + ig + "}";
      }
      ig_sent_ += static_cast<int64_t>(ig.size());
    }
    SendText(text, "progress");
  }

  // The answer as the last event: headers, type and the body (JSON as it
  // is; another format in base64).
  void Result(const Composed& answer, const std::string& server_timing) {
    std::lock_guard<std::mutex> lock(mutex_);
    json headers = json::object();
    for (const auto& [name, value] : answer.headers) headers[name] = value;
    headers["Server-Timing"] = server_timing;
    json event = {{"event", "result"}, {"content_type", answer.content_type}, {"headers", headers}};
    const std::string text = DumpJson(event);
    std::string body;
    if (answer.content_type == "application/json") {
      body = text.substr(0, text.size() - 1) + ",\"result\":" + answer.body + "}";
    } else {
      body = text.substr(0, text.size() - 1) + ",\"base64\":\"" + EncodeBase64(answer.body) + "\"}";
    }
    SendText(body, "result");
    End();
  }

  // A failure: an error event once the stream has started, else the usual answer.
  void Failure(int status, const std::string& message) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!exchange_->streaming()) {
      exchange_->Error(status, message);
      ended_ = true;
      return;
    }
    Send(json{{"event", "error"}, {"status", status}, {"error", message}});
    End();
  }

 private:
  void Send(const json& event) { SendText(DumpJson(event), event["event"].get<std::string>()); }
  void SendText(const std::string& text, const std::string& name) {
    if (ended_) return;
    if (!exchange_->streaming()) {
      exchange_->StartStream(MediaType::fromString(kind_ == "sse" ? "text/event-stream" : "application/x-ndjson"));
    }
    exchange_->Chunk(kind_ == "sse" ? "event: " + name + "\ndata: " + text + "\n\n" : text + "\n");
  }
  void End() {
    if (ended_) return;
    ended_ = true;
    exchange_->EndStream();
  }

  std::mutex mutex_;
  std::shared_ptr<Exchange> exchange_;
  std::string kind_;
  size_t images_;
  int64_t ig_budget_;    // HttpOptions::max_stream_ig_bytes
  int64_t ig_sent_ = 0;  // the IG's bytes the events have carried (or would have)
  bool ended_ = false;
};

}  // namespace

bool ReadQuery(const Pistache::Rest::Request& request, Exchange& exchange, QueryParams* query) {
  for (auto it = request.query().parameters_begin(); it != request.query().parameters_end(); ++it) {
    // Pistache splits the query at '&' and '=' and decodes nothing.
    const std::optional<std::string> name = DecodeQueryComponent(it->first);
    const std::optional<std::string> value = DecodeQueryComponent(it->second);
    if (!name || !value) {
      exchange.Error(400, "query: '" + Shorten(it->first + "=" + it->second, 80) +
                              "' is not percent-encoded (a '%' takes two hexadecimal digits)");
      return false;
    }
    query->emplace_back(*name, *value);
  }
  std::sort(query->begin(), query->end());  // Pistache keeps them unordered
  return true;
}

// What PostAttributions reads off the request on the I/O thread, for its work on the decode pool.
struct AttributionsCall {
  std::string body;
  std::string content_type;
  QueryParams query;
  HttpApi::RunOptions run;
};

void HttpApi::PostAttributions(const Pistache::Rest::Request& request, const std::shared_ptr<Exchange>& exchange) {
  auto call = std::make_shared<AttributionsCall>();
  call->body = TakeBody(request);
  if (!BodyWithinLimit(call->body, *exchange) || !ReadQuery(request, *exchange, &call->query)) return;
  call->content_type = HeaderText<Pistache::Http::Header::ContentType>(request);
  call->run.accept = HeaderText<Pistache::Http::Header::Accept>(request);
  if (request.hasParam(":name")) call->run.model = request.param(":name").as<std::string>();
  // A stream of progress events, when Accept asks for one.
  if (call->run.accept.find("text/event-stream") != std::string::npos) call->run.stream = "sse";
  if (call->run.accept.find("application/x-ndjson") != std::string::npos) call->run.stream = "ndjson";
  // The body while it is read, as JSON at worst; the images' pixels come after.
  Offload(exchange, call->body.size() * kJsonMemoryFactor, [this, exchange, call] {
    auto parsed = ReadAttributionsRequest(call->content_type, call->query, call->body, Limits());
    if (!parsed.ok()) {
      exchange->Error(HttpStatusOf(parsed.status()), parsed.status().message());
      return;
    }
    RunAttributions(exchange, std::move(parsed).value(), call->run);
  });
}

AttributionLimits HttpApi::Limits() const {
  return AttributionLimits{options_.limits, options_.max_images, options_.max_request_pixels};
}

void HttpApi::RunAttributions(const std::shared_ptr<Exchange>& exchange, AttributionsRequest request,
                              const RunOptions& run) {
  // The images' pixels, decoded and then held in the jobs until answered:
  // reserved from their headers before any is decoded.
  auto held = Reserve(RequestImageBytes(request), *exchange);
  if (held == nullptr) return;
  exchange->Hold(std::move(held));
  if (Status decoded = DecodeUploads(&request, Limits()); !decoded.ok()) {
    exchange->Error(HttpStatusOf(decoded), decoded.message());
    return;
  }
  auto model = ResolveModel(!run.model.empty() ? run.model : request.model);
  if (!model.ok()) {
    exchange->Error(HttpStatusOf(model.status()), model.status().message());
    return;
  }
  auto gathering = std::make_shared<Gathering>();
  gathering->model = *model;
  gathering->classes = broker_.Classes(*model).value_or(Cifar10Classes());
  gathering->n_steps = request.n_steps;
  gathering->predict = run.predict;
  // Each image's classes, checked before any work (a prediction has none).
  std::vector<std::vector<int>> targets;
  size_t results = 0;
  for (size_t i = 0; i < request.inputs.size() && !run.predict; ++i) {
    const std::string where = request.inputs.size() > 1 ? "image " + std::to_string(i) + ": " : "";
    const std::vector<std::string>& given = request.inputs[i].targets;
    auto resolved = ResolveTargets(given, gathering->classes);
    if (resolved.ok() && request.top_k > 0 && given == std::vector<std::string>{"predicted"}) resolved->clear();
    Status valid = resolved.status();
    if (valid.ok()) {
      valid = ValidateTargets(*resolved, request.top_k, static_cast<int>(gathering->classes.size()), request.method,
                              options_.limits);
    }
    if (!valid.ok()) {
      exchange->Error(HttpStatusOf(valid), where + valid.message());
      return;
    }
    results +=
        request.top_k > 0 ? std::min(gathering->classes.size(), static_cast<size_t>(request.top_k)) : resolved->size();
    targets.push_back(std::move(resolved).value());
  }
  // A protocol's answer is built from JSON, whatever the request says; a
  // stream's is JSON unless the request names a format (Accept asked for the stream).
  const bool protocol = run.render != nullptr;
  const std::optional<Format> format =
      protocol || (!run.stream.empty() && !request.format) ? std::optional(Format::kJson) : request.format;
  auto negotiated = NegotiateFormat(protocol || !run.stream.empty() ? "" : run.accept, format, results);
  if (!negotiated.ok()) {
    exchange->Error(HttpStatusOf(negotiated.status()), negotiated.status().message());
    return;
  }
  gathering->negotiated = *negotiated;
  if (Status regions = ValidateRegionRequest(request.regions, negotiated->format->format); !regions.ok()) {
    exchange->Error(HttpStatusOf(regions), regions.message());
    return;
  }
  std::shared_ptr<EventStream> stream;
  if (!run.stream.empty()) {
    stream = std::make_shared<EventStream>(exchange, run.stream, request.inputs.size(), options_.max_stream_ig_bytes);
  }
  auto answer = [this, exchange, gathering, stream, render = run.render] {
    if (auto failure = FirstFailure(*gathering)) {
      if (stream) {
        stream->Failure(failure->first, failure->second);
      } else {
        exchange->Error(failure->first, failure->second);
      }
      return;
    }
    const std::string timing = RecordResults(*gathering, metrics_, exchange->received());
    if (render != nullptr) {
      StatusOr<std::string> body = render(*gathering);
      if (!body.ok()) {
        exchange->Error(HttpStatusOf(body.status()), body.status().message());
        return;
      }
      exchange->Header("Server-Timing", timing);
      exchange->Send(200, std::move(body).value(), kJsonType);
      return;
    }
    Composed composed = Compose(*gathering);
    if (stream) {
      stream->Result(composed, timing);
      return;
    }
    exchange->Header("Server-Timing", timing);
    for (const auto& [name, value] : composed.headers) exchange->Header(name, value);
    exchange->Send(200, std::move(composed.body), MediaType::fromString(composed.content_type));
  };
  std::vector<Job> jobs;
  for (size_t i = 0; i < request.inputs.size(); ++i) {
    AttributionInput& input = request.inputs[i];
    Job job;
    job.model = *model;
    job.request = MakeJobRequest(request, run.predict ? std::vector<int>{} : targets[i], negotiated->format->format,
                                 run.predict, &input);
    if (Status valid = ValidateJob(job.request, static_cast<int>(gathering->classes.size()), options_.limits);
        !valid.ok()) {
      exchange->Error(HttpStatusOf(valid),
                      (request.inputs.size() > 1 ? "image " + std::to_string(i) + ": " : "") + valid.message());
      return;
    }
    job.deadline = exchange->received() + std::chrono::milliseconds(options_.request_timeout_ms);
    job.abandoned = [exchange] { return exchange->gone(); };
    job.done = [gathering, i, answer](JobReply reply) {
      if (gathering->Add(i, std::move(reply))) answer();
    };
    if (stream) {
      job.request.progress_ms = kProgressMs;
      job.progress = [stream, i](const JobProgress& progress) { stream->Progress(i, progress); };
    }
    jobs.push_back(std::move(job));
    gathering->names.push_back(input.name);
  }
  gathering->replies.resize(jobs.size());
  gathering->remaining = jobs.size();
  gathering->decode = std::chrono::duration<double>(Clock::now() - exchange->received()).count();
  for (size_t i = 0; i < jobs.size(); ++i) {
    Status submitted = broker_.Submit(std::move(jobs[i]));
    if (submitted.ok()) continue;
    // The broker will not call this job's done: it is answered with the refusal.
    if (gathering->Add(i, ErrorReply(0, submitted))) answer();
  }
}

}  // namespace intgrads
