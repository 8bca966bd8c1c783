#include "worker/serving/batcher.h"

#include <algorithm>

namespace intgrads {

BatchDecision DecideBatch(size_t queued, std::chrono::steady_clock::time_point oldest,
                          std::chrono::steady_clock::time_point now, const BatchPolicy& policy, bool draining) {
  BatchDecision decision;
  if (queued == 0) return decision;
  const size_t most = std::max<size_t>(1, policy.max_requests);
  const auto due = oldest + policy.window;
  if (queued >= most || draining || policy.window.count() <= 0 || now >= due) {
    decision.take = std::min(queued, most);
  } else {
    decision.wait_until = due;
  }
  return decision;
}

}  // namespace intgrads
