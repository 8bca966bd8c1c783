// What a worker is told by its flags (intgrads-worker --help).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/request.h"
#include "worker/engine/engine.h"

namespace intgrads {

struct WorkerOptions {
  // The gateways' worker endpoints: the worker serves whichever asks (one
  // socket each, each with its own heartbeats and reconnection).
  std::vector<std::string> connect = {"tcp://127.0.0.1:5555"};
  std::string model_name = "default";
  // CURVE (common/curve.h): the worker's secret key and the gateways' public
  // key (one, shared by the gateways of a deployment). Empty: no CURVE (the
  // launcher's private ipc endpoint, or --insecure-gateway).
  std::string secret_key;
  std::string gateway_key;
  // The largest frame a gateway may send (a request's image and baseline
  // image); a peer that sends a larger one is disconnected (ZMQ_MAXMSGSIZE).
  int64_t max_request_bytes = int64_t{256} << 20;
  int heartbeat_ms = 1000;
  int liveness = 3;  // heartbeats missed before a gateway counts as gone
  // 0 (stored): compression saves about a third of the bytes for tens of ms
  // an answer, which pays only on slow links (docs/PERFORMANCE.md).
  int gzip_level = 0;
  int grace_ms = 30000;  // how long shutdown waits for the requests in hand
  // Batching across requests: up to `batch_requests` requests queued here
  // share their forward and backward passes (AttributeJobs); the first waits
  // up to `batch_window_ms` for the others (BatchPolicy). The worker asks each
  // gateway for that many requests at a time (WorkerInfo::slots). 1: one at a time.
  int batch_requests = 1;
  int batch_window_ms = 0;
  // Threads that encode answers (torch.save, gzip, npz, ...) while the
  // compute thread goes on to the next batch.
  int encoder_threads = 1;
  // A pipe's write end (intgrads-images gives one) on which the worker says
  // it is ready, its model loaded and the gateways dialled; -1: none.
  int ready_fd = -1;
  EngineOptions engine;
  RequestLimits limits;
};

}  // namespace intgrads
