// One job from the edge to the engine: every route's request becomes a
// JobRequest through MakeJobRequest, and ValidateJob is what a job must be
// to be computed, checked by the gateway before it sends one and by a
// worker before any work (a worker may be older or newer than its gateway).
#pragma once

#include <string>
#include <vector>

#include "common/attributions.h"
#include "common/protocol.h"
#include "common/request.h"
#include "common/status.h"

namespace intgrads {

// The job for one input of a request: the request's options (n_steps,
// method, the heatmap's look, paths, regions, top_k), the classes for this
// input (one: the original's request; several: one reply for all; with
// `predict`, none: the forward pass alone), the format negotiated, and the
// input's pixels or tensor, moved out of `input`.
JobRequest MakeJobRequest(const AttributionsRequest& options, const std::vector<int>& targets, Format format,
                          bool predict, AttributionInput* input);

// Checks a job against the served model's class count and the limits: the
// rule and steps, the format, the look, the paths, the regions and the
// classes, each refusal a Status naming the field.
Status ValidateJob(const JobRequest& job, int num_classes, const RequestLimits& limits);

}  // namespace intgrads
