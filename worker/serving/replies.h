// A worker's requests, from the message to the reply, apart from the
// sockets (worker/serving/worker_loop.h): validated and prepared (the image to the
// model's input, the paths, the targets, the schedule), attributed (requests
// with a fixed schedule sharing their forward and backward passes), encoded
// (torch.save and gzip, npz, JSON, a PNG). Predictions (JobRequest::predict)
// share one forward pass and answer JSON. The passes and the encoding are
// two calls, so that a worker can run them on different threads.
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "common/image.h"
#include "common/protocol.h"
#include "worker/engine/engine.h"
#include "worker/models/model.h"
#include "worker/serving/worker_options.h"

namespace intgrads {

// One request on its way through a worker. `answered` once `reply` is
// final: refused, failed or encoded.
struct Work {
  JobRequest request;
  bool answered = false;
  JobReply reply;
  Image seen;  // the image at the model's input size
  PathJob job;
  std::vector<Attribution> attributions;  // on a GPU, maybe with their copies to the host in flight
  torch::Tensor logits;                   // a prediction's (JobRequest::predict), 1 x classes on the host
  double prepare = 0.0, attribute = 0.0, copy = 0.0, encode = 0.0, compress = 0.0;  // seconds
};

// Validates, prepares and attributes each request; with `async_copies` (a
// GPU) the results' copies to the host are left in flight. Throws nothing: a
// refusal or a failure is its Work's reply (one allocation failure in shared
// passes fails all that share them).
//
// `progress`, if set, is told how far each request's passes are after each
// batch (the request by its index in `requests`; PassProgress's job).
std::vector<Work> AttributeRequests(const Classifier& model, const torch::Device& device,
                                    std::vector<JobRequest> requests, const WorkerOptions& options, bool async_copies,
                                    const PassProgress& progress = nullptr);

// Waits for the copies, encodes the answer: `work->reply` final. Throws nothing.
void EncodeWork(const Classifier& model, const WorkerOptions& options, Work* work);

// Both, on this thread: one reply per request, in order.
std::vector<JobReply> ComputeReplies(const Classifier& model, const torch::Device& device,
                                     const std::vector<JobRequest>& requests, const WorkerOptions& options);

// One request: the reply the gateway relays (status 200 with the gzip'd
// torch.save payload, or a 4xx/5xx with an error message).
JobReply ComputeReply(const Classifier& model, const torch::Device& device, const JobRequest& request,
                      const WorkerOptions& options);

// What the worker announces.
WorkerInfo DescribeWorker(const Classifier& model, const torch::Device& device, const std::string& name);

}  // namespace intgrads
