// When a worker starts its next batch and how many requests go in it, as a
// pure function of its queue (the compute thread asks it; tests ask it
// directly). As in Triton's dynamic batcher: a batch takes up to
// `max_requests`; fewer wait for company until the oldest has waited
// `window`, then go as they are.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>

namespace intgrads {

struct BatchPolicy {
  size_t max_requests = 1;
  std::chrono::milliseconds window{0};  // 0: take what is queued at once
};

struct BatchDecision {
  size_t take = 0;  // requests to take now, from the front of the queue
  // With take 0 and requests queued: when to decide again (unless more arrive).
  std::optional<std::chrono::steady_clock::time_point> wait_until;
};

// `queued` requests, the oldest received at `oldest`; `draining`: the
// worker is stopping, so nothing waits for company.
BatchDecision DecideBatch(size_t queued, std::chrono::steady_clock::time_point oldest,
                          std::chrono::steady_clock::time_point now, const BatchPolicy& policy, bool draining);

}  // namespace intgrads
