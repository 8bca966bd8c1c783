#include "worker/serving/worker_loop.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/curve.h"
#include "worker/serving/batcher.h"

namespace intgrads {

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

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

// A request as it waits in the worker, and the gateway it came from.
struct Arrival {
  size_t gateway = 0;
  JobRequest request;
  Clock::time_point received;
};

// A request whose passes are done, on its way to an encoder.
struct Attributed {
  size_t gateway = 0;
  Work work;
  Clock::time_point received;
  Clock::time_point started;  // its batch's
  size_t batch_size = 1;
};

// The state the three kinds of threads share.
struct Pipeline {
  std::mutex mutex;
  std::condition_variable arrived;     // to the compute thread: requests, or quit
  std::condition_variable attributed;  // to the encoders: work, or quit
  std::deque<Arrival> arrivals;
  std::deque<Attributed> finished;
  size_t in_hand = 0;  // taken from `arrivals` and not yet sent back
  bool draining = false;
  bool quit = false;
};

// One gateway's socket and its liveness.
struct GatewayLink {
  std::string endpoint;
  std::unique_ptr<zmq::socket_t> socket;
  Clock::time_point expiry;
  Clock::time_point next_heartbeat;
};

}  // namespace

int RunWorker(const Classifier& model, const torch::Device& device, const WorkerOptions& options,
              const std::atomic<bool>& stop) {
  zmq::context_t context(1);
  // The encoders hand replies back through a PUSH/PULL pair of inproc
  // sockets: [gateway index, reply frames...].
  zmq::socket_t results(context, zmq::socket_type::pull);
  results.bind("inproc://results");
  Pipeline pipe;
  const int slots = std::max(1, options.batch_requests);
  const BatchPolicy policy{static_cast<size_t>(slots), std::chrono::milliseconds(options.batch_window_ms)};
  const bool async_copies = device.is_cuda();

  // The compute thread: the caller's, which loaded the model (worker_main.cc says why).
  auto compute = [&] {
    // Progress reports go out through the same pair as the replies.
    zmq::socket_t reports(context, zmq::socket_type::push);
    reports.set(zmq::sockopt::linger, 0);
    reports.connect("inproc://results");
    while (true) {
      std::vector<JobRequest> batch;
      std::vector<Arrival> taken;
      {
        std::unique_lock<std::mutex> lock(pipe.mutex);
        while (true) {
          if (pipe.quit) return;
          const BatchDecision decision =
              DecideBatch(pipe.arrivals.size(), pipe.arrivals.empty() ? Clock::now() : pipe.arrivals.front().received,
                          Clock::now(), policy, pipe.draining);
          if (decision.take > 0) {
            for (size_t i = 0; i < decision.take; ++i) {
              taken.push_back(std::move(pipe.arrivals.front()));
              pipe.arrivals.pop_front();
            }
            pipe.in_hand += taken.size();
            break;
          }
          if (decision.wait_until) {
            pipe.arrived.wait_until(lock, *decision.wait_until);
          } else {
            pipe.arrived.wait(lock);
          }
        }
      }
      batch.reserve(taken.size());
      // Each request's progress, at most every progress_ms and once when its passes are done.
      struct Reporting {
        uint64_t id;
        int every_ms;
        Clock::time_point last;
      };
      std::vector<Reporting> reporting;
      for (Arrival& a : taken) {
        reporting.push_back({a.request.id, a.request.progress_ms, Clock::time_point{}});
        batch.push_back(std::move(a.request));
      }
      const Clock::time_point started = Clock::now();
      auto report = [&](size_t i, int64_t done, int64_t total, const std::function<torch::Tensor()>& ig_so_far) {
        Reporting& r = reporting[i];
        const Clock::time_point now = Clock::now();
        if (r.every_ms <= 0 || (done < total && now - r.last < std::chrono::milliseconds(r.every_ms))) return;
        r.last = now;
        JobProgress progress;
        progress.id = r.id;
        progress.done = done;
        progress.total = total;
        progress.seconds = Seconds(now - started);
        const torch::Tensor ig = ig_so_far().to(torch::kCPU).to(torch::kFloat32).contiguous();
        progress.side = static_cast<int>(ig.size(-1));
        progress.ig.assign(static_cast<const char*>(ig.data_ptr()), static_cast<size_t>(ig.numel()) * sizeof(float));
        Frames frames = EncodeProgress(std::move(progress));
        frames.insert(frames.begin(), std::to_string(taken[i].gateway));
        Send(reports, std::move(frames));
      };
      // Passes report only when a request asked for it (a stream).
      const bool wanted =
          std::any_of(reporting.begin(), reporting.end(), [](const Reporting& r) { return r.every_ms > 0; });
      std::vector<Work> work = AttributeRequests(model, device, std::move(batch), options, async_copies,
                                                 wanted ? PassProgress(report) : PassProgress());
      {
        std::lock_guard<std::mutex> lock(pipe.mutex);
        for (size_t i = 0; i < work.size(); ++i) {
          pipe.finished.push_back({taken[i].gateway, std::move(work[i]), taken[i].received, started, work.size()});
        }
      }
      pipe.attributed.notify_all();
    }
  };

  // The encoders: each reply written and sent back to its gateway.
  auto encode = [&] {
    zmq::socket_t out(context, zmq::socket_type::push);
    out.set(zmq::sockopt::linger, -1);
    out.connect("inproc://results");
    while (true) {
      Attributed item;
      {
        std::unique_lock<std::mutex> lock(pipe.mutex);
        pipe.attributed.wait(lock, [&] { return pipe.quit || !pipe.finished.empty(); });
        if (pipe.finished.empty()) return;
        item = std::move(pipe.finished.front());
        pipe.finished.pop_front();
      }
      EncodeWork(model, options, &item.work);
      JobReply& reply = item.work.reply;
      const Clock::time_point done = Clock::now();
      reply.wait_seconds = Seconds(item.started - item.received);
      reply.compute_seconds = Seconds(done - item.started);
      const JobRequest& request = item.work.request;
      const std::string what = request.predict
                                   ? "prediction"
                                   : "n_steps " + std::to_string(reply.n_steps > 0 ? reply.n_steps : request.n_steps) +
                                         ", " + Name(request.method);
      std::fprintf(
          stderr, "intgrads-worker: request %llu: %s, %s, %.3f s%s\n", static_cast<unsigned long long>(request.id),
          StatusCodeName(reply.code), what.c_str(), reply.compute_seconds,
          item.batch_size > 1 ? (", batched with " + std::to_string(item.batch_size - 1) + " more").c_str() : "");
      Frames frames = EncodeReply(std::move(reply));
      frames.insert(frames.begin(), std::to_string(item.gateway));
      Send(out, std::move(frames));
      std::lock_guard<std::mutex> lock(pipe.mutex);
      --pipe.in_hand;
    }
  };

  WorkerInfo info = DescribeWorker(model, device, options.model_name);
  info.slots = slots;
  std::string public_key;
  if (!options.gateway_key.empty()) {
    auto derived = CurvePublicKey(options.secret_key);  // checked by the caller: a key
    if (derived.ok()) public_key = *derived;
  }
  const auto interval = std::chrono::milliseconds(options.heartbeat_ms);
  auto dial = [&](GatewayLink& link) {
    link.socket = std::make_unique<zmq::socket_t>(context, zmq::socket_type::dealer);
    zmq::socket_t& socket = *link.socket;
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::maxmsgsize, options.max_request_bytes);
    if (!options.gateway_key.empty()) {
      // The gateway proves it holds the secret key of gateway_key, and admits
      // this worker by its key; nothing crosses before that, nor unencrypted after.
      socket.set(zmq::sockopt::curve_serverkey, options.gateway_key);
      socket.set(zmq::sockopt::curve_publickey, public_key);
      socket.set(zmq::sockopt::curve_secretkey, options.secret_key);
    }
    socket.connect(link.endpoint);
    Send(socket, EncodeReady(info));
    link.expiry = Clock::now() + interval * options.liveness;
    link.next_heartbeat = Clock::now() + interval;
  };
  std::vector<GatewayLink> gateways(options.connect.size());
  std::string endpoints;
  for (size_t g = 0; g < gateways.size(); ++g) {
    gateways[g].endpoint = options.connect[g];
    dial(gateways[g]);
    endpoints += (g > 0 ? ", " : "") + options.connect[g];
  }
  if (options.ready_fd >= 0) {
    // A worker that dies after this is restarted by its launcher; one that dies before it, is not.
    const char ready = 'r';
    if (::write(options.ready_fd, &ready, 1) != 1) std::perror("intgrads-worker: --ready-fd");
    ::close(options.ready_fd);
  }
  std::fprintf(stderr, "intgrads-worker: serving %s %s on %s, connected to %s\n", info.family.c_str(),
               info.variant.c_str(), info.device.c_str(), endpoints.c_str());

  auto forward = [&](std::vector<zmq::message_t> parts) {
    if (parts.size() < 2) return;
    const size_t g = std::stoul(parts.front().to_string());
    parts.erase(parts.begin());
    zmq::send_multipart(*gateways[g].socket, parts);  // as received: no copy
    gateways[g].next_heartbeat = Clock::now() + interval;
  };
  std::thread io([&] {
    std::optional<Clock::time_point> stop_deadline;
    std::vector<zmq::pollitem_t> items(gateways.size() + 1);
    while (true) {
      if (stop.load() && !stop_deadline) {
        stop_deadline = Clock::now() + std::chrono::milliseconds(options.grace_ms);
        std::fprintf(stderr, "intgrads-worker: stopping, finishing the requests in hand\n");
        std::lock_guard<std::mutex> lock(pipe.mutex);
        pipe.draining = true;
        pipe.arrived.notify_all();
      }
      if (stop_deadline) {
        std::lock_guard<std::mutex> lock(pipe.mutex);
        if ((pipe.in_hand == 0 && pipe.arrivals.empty()) || Clock::now() > *stop_deadline) break;
      }
      for (size_t g = 0; g < gateways.size(); ++g)
        items[g] = {static_cast<void*>(*gateways[g].socket), 0, ZMQ_POLLIN, 0};
      items.back() = {static_cast<void*>(results), 0, ZMQ_POLLIN, 0};
      try {
        zmq::poll(items.data(), items.size(), std::chrono::milliseconds(std::min(options.heartbeat_ms, 200)));
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;  // a signal: the loop checks `stop`
        throw;
      }
      for (size_t g = 0; g < gateways.size(); ++g) {
        GatewayLink& link = gateways[g];
        if (items[g].revents & ZMQ_POLLIN) {
          Frames frames;
          for (auto& part : ReceiveParts(*link.socket)) frames.emplace_back(part.to_string());
          link.expiry = Clock::now() + interval * options.liveness;
          const std::string header = frames.empty() ? std::string() : frames.front();
          auto message = DecodeMessage(std::move(frames));
          if (!message.ok()) {
            std::fprintf(stderr, "intgrads-worker: refused a bad message from %s: %s\n", link.endpoint.c_str(),
                         message.status().message().c_str());
            // A request it cannot read is still answered, so that the gateway's client is not left waiting.
            if (const std::optional<uint64_t> id = RefusedRequestId({header})) {
              JobReply refusal;
              refusal.id = *id;
              refusal.code = StatusCode::kInvalid;
              refusal.error = message.status().message();
              Send(*link.socket, EncodeReply(std::move(refusal)));
            }
          } else if (message->type == MessageType::kRequest && !stop_deadline) {
            std::lock_guard<std::mutex> lock(pipe.mutex);
            pipe.arrivals.push_back({g, std::move(message->request), Clock::now()});
            pipe.arrived.notify_one();
          } else if (message->type == MessageType::kDisconnect) {
            link.expiry = Clock::now();  // the gateway is going: reconnect and announce again
          }
        }
        if (Clock::now() >= link.next_heartbeat) {
          Send(*link.socket, EncodeHeartbeat());
          link.next_heartbeat = Clock::now() + interval;
        }
        if (Clock::now() >= link.expiry && !stop_deadline) {
          std::fprintf(stderr, "intgrads-worker: gateway silent, reconnecting to %s\n", link.endpoint.c_str());
          dial(link);
        }
      }
      if (items.back().revents & ZMQ_POLLIN) {
        for (auto parts = ReceiveParts(results); !parts.empty(); parts = ReceiveParts(results))
          forward(std::move(parts));
      }
    }
    // Replies sent just before the last was counted: forward them before the goodbye.
    for (auto parts = ReceiveParts(results); !parts.empty(); parts = ReceiveParts(results)) forward(std::move(parts));
    for (GatewayLink& link : gateways) Send(*link.socket, EncodeDisconnect());
    {
      std::lock_guard<std::mutex> lock(pipe.mutex);
      pipe.quit = true;
      pipe.arrivals.clear();
    }
    pipe.arrived.notify_all();
    pipe.attributed.notify_all();
  });
  std::vector<std::thread> encoders;
  for (int i = 0; i < std::max(1, options.encoder_threads); ++i) encoders.emplace_back(encode);
  compute();
  io.join();
  for (std::thread& encoder : encoders) encoder.join();
  // Let the goodbyes leave before the context closes.
  for (GatewayLink& link : gateways) {
    link.socket->set(zmq::sockopt::linger, 500);
    link.socket->close();
  }
  results.close();
  std::fprintf(stderr, "intgrads-worker: stopped\n");
  return 0;
}

}  // namespace intgrads
