// The worker's side of the protocol: connect a DEALER socket to the
// gateway, announce the model (ready), answer requests (one at a time, or
// batched: WorkerOptions::batch_requests) on a compute thread while the socket thread keeps heartbeats going, reconnect
// when the gateway falls silent, and say goodbye (disconnect) on shutdown.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "common/protocol.h"
#include "common/request.h"
#include "worker/engine.h"
#include "worker/model.h"

namespace intgrads {

struct WorkerOptions {
  std::string connect = "tcp://127.0.0.1:5555";
  std::string model_name = "default";
  // CURVE (common/curve.h): the worker's secret key and the gateway's public
  // key. Empty: no CURVE (the launcher's private ipc endpoint, or --insecure-gateway).
  std::string secret_key;
  std::string gateway_key;
  // The largest frame the gateway may send (a request's image and baseline
  // image); a peer that sends a larger one is disconnected (ZMQ_MAXMSGSIZE).
  int64_t max_request_bytes = int64_t{256} << 20;
  int heartbeat_ms = 1000;
  int liveness = 3;  // heartbeats missed before the gateway counts as gone
  // 0 (stored): on BiT-R50x1's 1.2 MB answer level 1 took 36 ms for 32% fewer
  // bytes, which pays only on links slower than about 100 Mbit/s.
  int gzip_level = 0;
  int grace_ms = 30000;  // how long shutdown waits for the request in flight
  // Batching across requests: up to `batch_requests` requests queued here
  // share their forward and backward passes (AttributeJobs); the first waits
  // up to `batch_window_ms` for the others. The worker asks the gateway for
  // that many requests at a time (WorkerInfo::slots). 1: one at a time.
  int batch_requests = 1;
  int batch_window_ms = 0;
  // A pipe's write end (intgrads-images gives one) on which the worker says
  // it is ready, its model loaded and the gateway dialled; -1: none.
  int ready_fd = -1;
  EngineOptions engine;
  RequestLimits limits;
};

// Requests computed together: those with a fixed schedule share forward and
// backward passes (AttributeJobs), one reply each, in order. A failure in the
// shared passes (out of memory) fails all of them.
std::vector<JobReply> ComputeReplies(const Classifier& model, const torch::Device& device,
                                     const std::vector<JobRequest>& requests, const WorkerOptions& options);

// One request, computed: the reply the gateway relays (status 200 with the
// gzip'd torch.save payload, or a 4xx/5xx with an error message).
JobReply ComputeReply(const Classifier& model, const torch::Device& device, const JobRequest& request,
                      const WorkerOptions& options);

// What the worker announces.
WorkerInfo DescribeWorker(const Classifier& model, const torch::Device& device, const std::string& name);

// Runs until `stop` becomes true; returns the process exit code.
int RunWorker(const Classifier& model, const torch::Device& device, const WorkerOptions& options,
              const std::atomic<bool>& stop);

}  // namespace intgrads
