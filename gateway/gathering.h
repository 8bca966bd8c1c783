// The replies to the jobs of one HTTP request, gathered until the last
// arrives (HttpApi::RunAttributions); then one answer: the /v1 answer, or a
// protocol's (gateway/protocols.h) from the same replies.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "common/attributions.h"
#include "common/protocol.h"
#include "common/status.h"

namespace intgrads {

struct Gathering {
  std::mutex mutex;
  size_t remaining = 0;
  std::vector<JobReply> replies;  // one per input, in order; further targets' in each one's `others`
  std::vector<std::string> names;
  std::string model;
  std::vector<std::string> classes;
  Negotiated negotiated;
  int n_steps = 0;
  bool predict = false;  // forward passes alone: each payload is a prediction's JSON
  double decode = 0.0;   // seconds to read the request and decode its images

  // Keeps job i's reply; true for the last one.
  bool Add(size_t i, JobReply reply) {
    std::lock_guard<std::mutex> lock(mutex);
    replies[i] = std::move(reply);
    return --remaining == 0;
  }
};

// A protocol's answer (JSON) from replies that all succeeded.
using Renderer = std::function<StatusOr<std::string>(const Gathering&)>;

}  // namespace intgrads
