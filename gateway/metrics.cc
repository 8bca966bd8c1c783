#include "gateway/metrics.h"

#include <array>
#include <cstdio>
#include <initializer_list>
#include <string_view>

namespace intgrads {

namespace {

// Appends the pieces of one line to `out`.
void Line(std::string& out, std::initializer_list<std::string_view> pieces) {
  for (std::string_view p : pieces) out.append(p);
  out += '\n';
}

// A label value with \, " and newlines escaped.
std::string Label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string Number(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.9g", v);
  return buffer;
}

// One histogram's lines: its buckets (counts per bucket, summed here), sum and count.
template <size_t N>
void Histogram(std::string& out, std::string_view name, const std::string& labels, const std::array<double, N>& bounds,
               const std::array<uint64_t, N>& buckets, uint64_t count, double sum) {
  uint64_t cumulative = 0;
  for (size_t b = 0; b < N; ++b) {
    cumulative += buckets[b];
    Line(out, {name, "_bucket{", labels, ",le=\"", Number(bounds[b]), "\"} ", std::to_string(cumulative)});
  }
  Line(out, {name, "_bucket{", labels, ",le=\"+Inf\"} ", std::to_string(count)});
  Line(out, {name, "_sum{", labels, "} ", Number(sum)});
  Line(out, {name, "_count{", labels, "} ", std::to_string(count)});
}

}  // namespace

void Metrics::Record(const std::string& route, int status, double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{route, status}];
  Latency& l = latency_[route];
  size_t b = 0;
  while (b < kBuckets.size() && seconds > kBuckets[b]) ++b;
  if (b < kBuckets.size()) ++l.buckets[b];
  ++l.count;
  l.sum += seconds;
}

void Metrics::RecordStages(const std::vector<std::pair<std::string, double>>& stages) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [name, seconds] : stages) {
    Stage& stage = stages_[name];
    size_t b = 0;
    while (b < kStageBuckets.size() && seconds > kStageBuckets[b]) ++b;
    if (b < kStageBuckets.size()) ++stage.buckets[b];
    ++stage.count;
    stage.sum += seconds;
  }
}

void Metrics::AddAttribution(int n_steps) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++attributions_;
  steps_ += static_cast<uint64_t>(n_steps);
}

std::string Metrics::Render(const std::vector<WorkerSnapshot>& workers, size_t queue_depth) const {
  std::string out;
  std::lock_guard<std::mutex> lock(mutex_);
  out += "# HELP intgrads_http_requests_total HTTP requests answered, by route and status.\n";
  out += "# TYPE intgrads_http_requests_total counter\n";
  for (const auto& [key, count] : requests_) {
    out += "intgrads_http_requests_total{route=\"" + Label(key.first) + "\",status=\"" + std::to_string(key.second) +
           "\"} " + std::to_string(count) + "\n";
  }
  out += "# HELP intgrads_http_request_duration_seconds Time from a request's arrival to its answer.\n";
  out += "# TYPE intgrads_http_request_duration_seconds histogram\n";
  for (const auto& [route, l] : latency_) {
    Histogram(out, "intgrads_http_request_duration_seconds", "route=\"" + Label(route) + "\"", kBuckets, l.buckets,
              l.count, l.sum);
  }
  out += "# HELP intgrads_stage_seconds Each stage of an attribution's time (Server-Timing's names).\n";
  out += "# TYPE intgrads_stage_seconds histogram\n";
  for (const auto& [stage, h] : stages_) {
    Histogram(out, "intgrads_stage_seconds", "stage=\"" + Label(stage) + "\"", kStageBuckets, h.buckets, h.count,
              h.sum);
  }
  out += "# HELP intgrads_attributions_total Attributions computed and answered.\n";
  out += "# TYPE intgrads_attributions_total counter\n";
  out += "intgrads_attributions_total " + std::to_string(attributions_) + "\n";
  out += "# HELP intgrads_path_steps_total Path points computed (n_steps of each attribution).\n";
  out += "# TYPE intgrads_path_steps_total counter\n";
  out += "intgrads_path_steps_total " + std::to_string(steps_) + "\n";
  out += "# HELP intgrads_queue_depth Requests waiting for a worker.\n";
  out += "# TYPE intgrads_queue_depth gauge\n";
  out += "intgrads_queue_depth " + std::to_string(queue_depth) + "\n";
  std::map<std::pair<std::string, std::string>, int> states;
  for (const WorkerSnapshot& w : workers) {
    states[{w.info.model, "idle"}] += 0;
    states[{w.info.model, "busy"}] += 0;
    ++states[{w.info.model, w.state}];
  }
  out += "# HELP intgrads_workers Workers connected, by model and state.\n";
  out += "# TYPE intgrads_workers gauge\n";
  for (const auto& [key, count] : states) {
    out += "intgrads_workers{model=\"" + Label(key.first) + "\",state=\"" + Label(key.second) + "\"} " +
           std::to_string(count) + "\n";
  }
  return out;
}

}  // namespace intgrads
