#include "worker/worker_loop.h"

#include <torch/autograd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/curve.h"
#include "common/gzip.h"
#include "worker/formats.h"

namespace intgrads {

namespace {

using Clock = std::chrono::steady_clock;

// Hands the frames to ZeroMQ without copying them: each message owns its
// string until ZeroMQ is done with it (a reply's payload is a megabyte and
// more; copies of it cost the request time).
void Send(zmq::socket_t& socket, Frames frames) {
  std::vector<zmq::message_t> parts;
  parts.reserve(frames.size());
  for (std::string& frame : frames) {
    auto* owned = new std::string(std::move(frame));
    parts.emplace_back(
        owned->data(), owned->size(), [](void* /*data*/, void* hint) { delete static_cast<std::string*>(hint); },
        owned);
  }
  zmq::send_multipart(socket, parts);
}

std::vector<zmq::message_t> ReceiveParts(zmq::socket_t& socket) {
  std::vector<zmq::message_t> parts;
  (void)zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait);
  return parts;
}

Frames Receive(zmq::socket_t& socket) {
  Frames frames;
  for (auto& p : ReceiveParts(socket)) frames.emplace_back(p.to_string());
  return frames;
}

}  // namespace

WorkerInfo DescribeWorker(const Classifier& model, const torch::Device& device, const std::string& name) {
  WorkerInfo info;
  info.model = name;
  info.family = FamilyName(model.info().family);
  info.variant = model.info().variant;
  info.device = device.str();
  info.classes = model.info().classes;
  info.input_size = model.info().input_size;
  info.mean.assign(model.info().normalization.mean.begin(), model.info().normalization.mean.end());
  info.std.assign(model.info().normalization.std.begin(), model.info().normalization.std.end());
  return info;
}

namespace {

// Logs the warning of a convergence delta past 10% of f(x) - f(baseline).
void WarnIfIncomplete(const Attribution& a, const JobRequest& request) {
  if (!IsIncomplete(a, 0.1)) return;
  std::fprintf(stderr,
               "intgrads-worker: warning: request %llu, class %d: convergence delta %.4g is %.0f%% of f(x) - "
               "f(baseline) = %.4g (method %s, n_steps %d); the IG is incomplete: raise n_steps or try method scan "
               "(docs/FAITHFULNESS.md)\n",
               static_cast<unsigned long long>(request.id), a.target, a.convergence_delta,
               100.0 * std::fabs(a.convergence_delta) / std::fabs(a.target_logit - a.baseline_logit),
               a.target_logit - a.baseline_logit, request.method.c_str(), a.n_steps);
}

// The request's format, validated with everything else a worker checks
// before any work; nullptr with *error set when the request is refused.
const PayloadFormat* Validate(const JobRequest& request, int num_classes, const WorkerOptions& options, Status* error) {
  const PayloadFormat* format = FindPayloadFormat(request.format);
  Status valid = ValidateSteps(request.n_steps, request.method, options.limits);
  if (valid.ok() && format == nullptr)
    valid = InvalidError("format: '" + request.format.substr(0, 32) + "' is not one");
  if (valid.ok() && request.heatmap != "signed" && request.heatmap != "absolute") {
    valid = InvalidError("heatmap: '" + request.heatmap.substr(0, 32) + "' is not signed or absolute");
  }
  if (valid.ok()) valid = ValidatePathRequest(request.paths, request.method, options.limits);
  if (valid.ok()) valid = ValidateRegionRequest(request.regions, request.format);
  if (valid.ok() && request.top_k == 0 && request.targets.empty()) {
    valid = ValidateTargets({request.target}, 0, num_classes, request.method, options.limits);
  } else if (valid.ok()) {
    valid = ValidateTargets(request.targets, request.top_k, num_classes, request.method, options.limits);
  }
  *error = valid;
  return valid.ok() ? format : nullptr;
}

}  // namespace

namespace {

double Since(Clock::time_point* mark) {
  const Clock::time_point now = Clock::now();
  const double seconds = std::chrono::duration<double>(now - *mark).count();
  *mark = now;
  return seconds;
}

// The reply to a request whose computation threw; call it in a catch block.
JobReply FailureReply(uint64_t id) {
  JobReply reply;
  reply.id = id;
  const std::string out_of_memory = "the worker ran out of memory for this request; retry later or with fewer n_steps";
  try {
    throw;
  } catch (const std::bad_alloc&) {
    reply.status = 503;
    reply.error = out_of_memory;
  } catch (const std::exception& e) {
    const std::string what = e.what();
    const bool memory =
        what.find("out of memory") != std::string::npos || what.find("DefaultCPUAllocator") != std::string::npos;
    std::fprintf(stderr, "intgrads-worker: request %llu failed: %s\n", static_cast<unsigned long long>(id),
                 what.substr(0, 500).c_str());
    reply.status = memory ? 503 : 500;
    reply.error = memory ? out_of_memory : "internal error while computing the attribution";
  }
  return reply;
}

// One request on its way through the worker: validated and prepared (input,
// paths, targets, schedule), attributed (alone or in passes shared with other
// requests), encoded. `answered` once `reply` is final: refused, failed or done.
struct Work {
  const JobRequest* request = nullptr;
  const PayloadFormat* format = nullptr;
  bool answered = false;
  JobReply reply;
  Image seen;
  PathJob job;
  std::vector<Attribution> attributions;
  double prepare = 0.0, attribute = 0.0, encode = 0.0, compress = 0.0;
};

void Refuse(Work* w, int status, const std::string& message) {
  w->reply.status = status;
  w->reply.error = message;
  w->answered = true;
}

void Prepare(const Classifier& model, const torch::Device& device, const WorkerOptions& options, Work* w) {
  const JobRequest& request = *w->request;
  w->reply.id = request.id;
  Status invalid;
  w->format = Validate(request, static_cast<int>(model.info().classes.size()), options, &invalid);
  if (w->format == nullptr) {
    Refuse(w, invalid.code() == StatusCode::kTooLarge ? 413 : 422, invalid.message());
    return;
  }
  Clock::time_point mark = Clock::now();
  Image image;
  image.height = request.height;
  image.width = request.width;
  image.channels = request.channels;
  image.pixels.assign(request.pixels.begin(), request.pixels.end());
  w->seen = ModelInputImage(image, model.info());
  torch::Tensor input = NormalizedTensor(w->seen, model.info()).to(device);
  Targets targets{request.targets, request.top_k};
  if (targets.classes.empty() && targets.top_k == 0) targets.classes = {request.target};
  if (request.method == "scan") {
    // The scan needs its target before the path; other rules let the
    // engine read predicted and top-k classes from the pass it makes at x
    // anyway.
    torch::NoGradGuard no_grad;
    targets.classes = ChooseTargets(targets, model.Forward(input.to(model.dtype())).to(torch::kCPU));
    targets.top_k = 0;
  }
  const PathRequest& wanted = request.paths;
  torch::Tensor baseline_image;
  if (!wanted.baseline_image.pixels.empty()) {
    baseline_image = NormalizedTensor(ModelInputImage(wanted.baseline_image, model.info()), model.info()).to(device);
  }
  auto paths = MakePaths(input, model.info(), wanted, baseline_image);
  StatusOr<PathSchedule> schedule = PathSchedule();
  if (paths.ok() && wanted.tolerance <= 0.0) {
    const int scan_target = targets.classes.empty() ? 0 : targets.classes.front();
    schedule = PlanSchedule(model, input, scan_target, request.method, request.n_steps, options.engine,
                            paths->front().baseline);
  }
  if (!paths.ok() || !schedule.ok()) {
    Refuse(w, 422, (!paths.ok() ? paths.status() : schedule.status()).message());
    return;
  }
  w->job = PathJob{input, std::move(paths).value(), std::move(targets), std::move(schedule).value()};
  w->prepare = Since(&mark);
}

void Encode(const Classifier& model, const WorkerOptions& options, Work* w) {
  const JobRequest& request = *w->request;
  const PayloadFormat* format = w->format;
  Clock::time_point mark = Clock::now();
  JobReply& reply = w->reply;
  const std::vector<Attribution>& attributions = w->attributions;
  std::vector<double> probabilities = Probabilities(attributions.front().logits);
  for (size_t i = 0; i < attributions.size(); ++i) {
    const Attribution& attribution = attributions[i];
    StatusOr<Regions> regions = Regions();
    if (request.regions.kind != "none") {
      regions = ComputeRegions(attribution, request.regions, w->seen);
      if (!regions.ok()) throw std::runtime_error(regions.status().message());
    }
    Explanation explanation{&attribution,
                            &w->job.input,
                            &model.info().classes,
                            probabilities,
                            request.method,
                            attribution.n_steps,
                            request.regions.kind != "none" ? &regions.value() : nullptr};
    StatusOr<std::string> payload = std::string();
    if (format->name == "gzip") {
      const std::string saved = EncodeAttribution(attribution);
      w->encode += Since(&mark);
      payload = GzipCompress(saved, options.gzip_level);
      w->compress += Since(&mark);
    } else if (format->name == "npz") {
      payload = EncodeNpz(explanation);
    } else if (format->name == "json") {
      payload = EncodeJson(explanation);
    } else if (explanation.regions != nullptr) {
      payload = EncodeRegionsPng(explanation, w->seen, request.regions.top);
    } else {
      payload = EncodeHeatmapPng(explanation, w->seen, request.heatmap);
    }
    if (!payload.ok()) throw std::runtime_error(payload.status().message());
    w->encode += Since(&mark);
    JobReply& out = i == 0 ? reply : reply.others.emplace_back();
    out.id = request.id;
    out.payload = std::move(payload).value();
    out.content_type = format->content_type;
    out.target = attribution.target;
    out.probabilities = probabilities;
    out.convergence_delta = attribution.convergence_delta;
    out.n_steps = attribution.n_steps;
    out.tolerance_met = !(request.paths.tolerance > 0.0 && IsIncomplete(attribution, request.paths.tolerance));
    WarnIfIncomplete(attribution, request);
  }
  // The gateway disconnects a peer that sends it a frame over its limit: refuse the answer instead.
  size_t largest = reply.payload.size();
  for (const JobReply& other : reply.others) largest = std::max(largest, other.payload.size());
  if (request.max_reply_bytes > 0 && static_cast<int64_t>(largest) > request.max_reply_bytes) {
    reply = JobReply();
    reply.id = request.id;
    Refuse(w, 413,
           "the answer would be " + std::to_string(largest) + " bytes, over the gateway's limit of " +
               std::to_string(request.max_reply_bytes) +
               " (--max-reply-bytes); ask for fewer n_steps, fewer paths or another format");
    return;
  }
  reply.status = 200;
  reply.prepare_seconds = w->prepare;
  reply.attribute_seconds = w->attribute;
  reply.encode_seconds = w->encode;
  reply.compress_seconds = w->compress;
  w->answered = true;
}

}  // namespace

std::vector<JobReply> ComputeReplies(const Classifier& model, const torch::Device& device,
                                     const std::vector<JobRequest>& requests, const WorkerOptions& options) {
  std::vector<Work> work(requests.size());
  auto fail = [&work](size_t i) {
    work[i].reply = FailureReply(work[i].request->id);
    work[i].answered = true;
  };
  for (size_t i = 0; i < requests.size(); ++i) {
    work[i].request = &requests[i];
    try {
      Prepare(model, device, options, &work[i]);
    } catch (...) {
      fail(i);
    }
  }
  // Requests with a fixed schedule share their passes; adaptive steps
  // (a tolerance) run alone, as each try depends on the one before.
  std::vector<size_t> shared;
  std::vector<PathJob> jobs;
  for (size_t i = 0; i < work.size(); ++i) {
    if (work[i].answered || work[i].request->paths.tolerance > 0.0) continue;
    shared.push_back(i);
    jobs.push_back(work[i].job);
  }
  if (!jobs.empty()) {
    Clock::time_point mark = Clock::now();
    try {
      std::vector<std::vector<Attribution>> results = AttributeJobs(model, jobs, options.engine);
      const double seconds = Since(&mark);
      for (size_t k = 0; k < shared.size(); ++k) {
        work[shared[k]].attributions = std::move(results[k]);
        work[shared[k]].attribute = seconds;
      }
    } catch (...) {
      for (size_t i : shared) fail(i);  // one allocation failure fails the passes they share
    }
  }
  for (size_t i = 0; i < work.size(); ++i) {
    Work& w = work[i];
    try {
      if (!w.answered && w.request->paths.tolerance > 0.0) {
        Clock::time_point mark = Clock::now();
        int spent = 0;
        bool met = false;
        w.attributions =
            AttributeToTolerance(model, w.job.input, w.job.paths, w.job.targets, w.request->paths.tolerance,
                                 options.limits.max_n_steps, options.engine, &met, &spent);
        w.attribute = Since(&mark);
      }
      if (!w.answered) Encode(model, options, &w);
    } catch (...) {
      fail(i);
    }
  }
  std::vector<JobReply> replies;
  replies.reserve(work.size());
  for (Work& w : work) replies.push_back(std::move(w.reply));
  return replies;
}

JobReply ComputeReply(const Classifier& model, const torch::Device& device, const JobRequest& request,
                      const WorkerOptions& options) {
  return ComputeReplies(model, device, {request}, options).front();
}

int RunWorker(const Classifier& model, const torch::Device& device, const WorkerOptions& options,
              const std::atomic<bool>& stop) {
  zmq::context_t context(1);
  // The compute thread hands replies back through this pair of inproc sockets.
  zmq::socket_t results_in(context, zmq::socket_type::pair);
  results_in.bind("inproc://results");
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<JobRequest> jobs;
  bool busy = false;
  bool quit = false;
  // Requests are computed on the calling thread, which should be the one
  // that loaded the model (worker_main.cc says why). The socket's loop runs
  // on a thread of its own.
  // Requests taken at a time: announced to the gateway, batched here.
  const int slots = std::max(1, options.batch_requests);
  auto compute = [&] {
    zmq::socket_t results_out(context, zmq::socket_type::pair);
    results_out.connect("inproc://results");
    const auto most = static_cast<size_t>(slots);
    while (true) {
      std::vector<JobRequest> batch;
      {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait(lock, [&] { return quit || !jobs.empty(); });
        if (jobs.empty()) break;
        if (jobs.size() < most && options.batch_window_ms > 0) {
          // The first request waits up to the window for company.
          wake.wait_for(lock, std::chrono::milliseconds(options.batch_window_ms),
                        [&] { return quit || jobs.size() >= most; });
        }
        while (!jobs.empty() && batch.size() < most) {
          batch.push_back(std::move(jobs.front()));
          jobs.pop_front();
        }
        busy = true;
      }
      const auto started = Clock::now();
      std::vector<JobReply> replies = ComputeReplies(model, device, batch, options);
      const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
      for (size_t i = 0; i < batch.size(); ++i) {
        JobReply& reply = replies[i];
        reply.compute_seconds = seconds;
        std::fprintf(stderr, "intgrads-worker: request %llu: status %d, n_steps %d, %s, %.3f s%s\n",
                     static_cast<unsigned long long>(batch[i].id), reply.status,
                     reply.n_steps > 0 ? reply.n_steps : batch[i].n_steps, batch[i].method.c_str(), seconds,
                     batch.size() > 1 ? (", batched with " + std::to_string(batch.size() - 1) + " more").c_str() : "");
        Send(results_out, EncodeReply(std::move(reply)));
      }
      std::lock_guard<std::mutex> lock(mutex);
      busy = false;
    }
  };

  WorkerInfo info = DescribeWorker(model, device, options.model_name);
  info.slots = slots;
  std::string public_key;
  if (!options.gateway_key.empty()) {
    auto derived = CurvePublicKey(options.secret_key);  // checked by the caller: a key
    if (derived.ok()) public_key = *derived;
  }
  auto connect = [&]() {
    auto socket = std::make_unique<zmq::socket_t>(context, zmq::socket_type::dealer);
    socket->set(zmq::sockopt::linger, 0);
    socket->set(zmq::sockopt::maxmsgsize, options.max_request_bytes);
    if (!options.gateway_key.empty()) {
      // The gateway proves it holds the secret key of gateway_key, and admits
      // this worker by its key; nothing crosses before that, nor unencrypted after.
      socket->set(zmq::sockopt::curve_serverkey, options.gateway_key);
      socket->set(zmq::sockopt::curve_publickey, public_key);
      socket->set(zmq::sockopt::curve_secretkey, options.secret_key);
    }
    socket->connect(options.connect);
    Send(*socket, EncodeReady(info));
    return socket;
  };
  std::unique_ptr<zmq::socket_t> gateway = connect();
  if (options.ready_fd >= 0) {
    // A worker that dies after this is restarted by its launcher; one that dies before it, is not.
    const char ready = 'r';
    if (::write(options.ready_fd, &ready, 1) != 1) std::perror("intgrads-worker: --ready-fd");
    ::close(options.ready_fd);
  }
  std::fprintf(stderr, "intgrads-worker: serving %s %s on %s, connected to %s\n", info.family.c_str(),
               info.variant.c_str(), info.device.c_str(), options.connect.c_str());
  std::thread io([&] {
    const auto interval = std::chrono::milliseconds(options.heartbeat_ms);
    auto gateway_expiry = Clock::now() + interval * options.liveness;
    auto next_heartbeat = Clock::now() + interval;
    std::optional<Clock::time_point> stop_deadline;
    while (true) {
      if (stop.load() && !stop_deadline) {
        stop_deadline = Clock::now() + std::chrono::milliseconds(options.grace_ms);
        std::fprintf(stderr, "intgrads-worker: stopping, finishing the request in flight\n");
      }
      if (stop_deadline) {
        std::lock_guard<std::mutex> lock(mutex);
        if ((!busy && jobs.empty()) || Clock::now() > *stop_deadline) break;
      }
      zmq::pollitem_t items[] = {{static_cast<void*>(*gateway), 0, ZMQ_POLLIN, 0},
                                 {static_cast<void*>(results_in), 0, ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, 2, std::chrono::milliseconds(std::min(options.heartbeat_ms, 200)));
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;  // a signal: the loop checks `stop`
        throw;
      }
      if (items[0].revents & ZMQ_POLLIN) {
        Frames frames = Receive(*gateway);
        gateway_expiry = Clock::now() + interval * options.liveness;
        auto message = DecodeMessage(std::move(frames));
        if (!message.ok()) {
          std::fprintf(stderr, "intgrads-worker: dropped a bad message: %s\n", message.status().message().c_str());
        } else if (message->type == MessageType::kRequest && !stop_deadline) {
          std::lock_guard<std::mutex> lock(mutex);
          jobs.push_back(std::move(message->request));
          wake.notify_one();
        } else if (message->type == MessageType::kDisconnect) {
          gateway_expiry = Clock::now();  // the gateway is going: reconnect and announce again
        }
      }
      if (items[1].revents & ZMQ_POLLIN) {
        std::vector<zmq::message_t> reply = ReceiveParts(results_in);
        zmq::send_multipart(*gateway, reply);  // as received: no copy
        next_heartbeat = Clock::now() + interval;
      }
      if (Clock::now() >= next_heartbeat) {
        Send(*gateway, EncodeHeartbeat());
        next_heartbeat = Clock::now() + interval;
      }
      if (Clock::now() >= gateway_expiry && !stop_deadline) {
        std::fprintf(stderr, "intgrads-worker: gateway silent, reconnecting to %s\n", options.connect.c_str());
        gateway = connect();
        gateway_expiry = Clock::now() + interval * options.liveness;
      }
    }
    // A reply the compute loop sent just before it went idle: forward it before the goodbye.
    for (auto pending = ReceiveParts(results_in); !pending.empty(); pending = ReceiveParts(results_in)) {
      zmq::send_multipart(*gateway, pending);
    }
    Send(*gateway, EncodeDisconnect());
    {
      std::lock_guard<std::mutex> lock(mutex);
      quit = true;
      jobs.clear();
    }
    wake.notify_all();
  });
  compute();
  io.join();
  // Let the goodbye leave before the context closes.
  gateway->set(zmq::sockopt::linger, 500);
  gateway->close();
  results_in.close();
  std::fprintf(stderr, "intgrads-worker: stopped\n");
  return 0;
}

}  // namespace intgrads
