// The gateway's counters, served at GET /metrics in Prometheus' text format
// (version 0.0.4): requests by route and status, a latency histogram by
// route, a histogram of each stage of an attribution's time (ServerTiming's
// stages), attributions and path steps computed, and, read at scrape time,
// the queue depth and the workers by model and state. Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "gateway/broker.h"

namespace intgrads {

class Metrics {
 public:
  // Upper bounds of the latency buckets, seconds.
  static constexpr std::array<double, 14> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1,  0.25, 0.5,
                                                      1.0,   2.5,  5.0,   10.0, 30.0, 60.0, 300.0};

  // One answered request; `route` is the route's template ("/v1/models/{name}").
  void Record(const std::string& route, int status, double seconds);
  // Upper bounds of the stage buckets, seconds: finer, as stages are short.
  static constexpr std::array<double, 16> kStageBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                           0.25,   0.5,   1.0,    2.5,   5.0,  10.0,  30.0, 60.0};

  // One attribution computed with n_steps path points.
  void AddAttribution(int n_steps);
  // One attribution's time, stage by stage (name, seconds).
  void RecordStages(const std::vector<std::pair<std::string, double>>& stages);
  std::string Render(const std::vector<WorkerSnapshot>& workers, size_t queue_depth) const;

 private:
  struct Latency {
    std::array<uint64_t, kBuckets.size()> buckets{};  // not cumulative; Render sums them
    uint64_t count = 0;
    double sum = 0.0;
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, Latency> latency_;
  struct Stage {
    std::array<uint64_t, kStageBuckets.size()> buckets{};
    uint64_t count = 0;
    double sum = 0.0;
  };
  std::map<std::string, Stage> stages_;
  uint64_t attributions_ = 0;
  uint64_t steps_ = 0;
};

}  // namespace intgrads
