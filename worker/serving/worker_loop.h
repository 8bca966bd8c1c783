// A worker's serving loop: one DEALER socket per gateway (it serves
// whichever asks), the model's passes on the calling thread, the answers'
// encoding on encoder threads. Requests from every gateway join one queue;
// the compute thread takes them in batches (worker/serving/batcher.h), runs their
// passes and hands them to the encoders, and starts the next batch at once;
// an encoder writes each reply and sends it back to the gateway that asked.
// A socket thread keeps each gateway's heartbeats, reconnects to one that
// falls silent, and says goodbye (disconnect) to all on shutdown.
#pragma once

#include <atomic>

#include "worker/models/model.h"
#include "worker/serving/replies.h"
#include "worker/serving/worker_options.h"

namespace intgrads {

// Runs until `stop` becomes true, then finishes the requests in hand (up to
// options.grace_ms); returns the process exit code.
int RunWorker(const Classifier& model, const torch::Device& device, const WorkerOptions& options,
              const std::atomic<bool>& stop);

}  // namespace intgrads
