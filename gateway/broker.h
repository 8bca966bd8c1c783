// The gateway's broker: one thread owns the ROUTER socket that workers
// connect to (the Majordomo pattern of the ZeroMQ guide, our own code).
// Workers announce what they serve (ready), the broker keeps a queue of
// ready workers, gives each request to one ready worker serving its model
// (a worker that batches holds up to its `slots` requests at once),
// and relays the reply to the request's callback. Heartbeats run both ways;
// a worker silent for `liveness` intervals is dropped and its request
// retried on another worker within the request's deadline. Every submitted
// job gets exactly one call of its `done`.
//
//   ASSIGN_OR_RETURN(auto broker, Broker::Create(options));
//   broker->Submit(std::move(job));  // from any thread; done() runs on the broker thread
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "common/protocol.h"
#include "common/status.h"

namespace intgrads {

struct BrokerOptions {
  std::string bind = "tcp://127.0.0.1:5555";
  int heartbeat_ms = 1000;
  int liveness = 3;
  int max_attempts = 3;      // workers a request may be tried on
  size_t max_queued = 1024;  // jobs waiting for a worker; more get 503
  // CURVE (common/curve.h): the gateway's secret key and the public keys of
  // the workers it lets in, checked by a ZAP handler before a worker's first
  // message. Empty: no CURVE, whoever reaches `bind` may join (the
  // launcher's private ipc endpoint, or --insecure-workers).
  std::string secret_key;
  std::vector<std::string> worker_keys;
  // The largest frame a worker may send (a reply's payload); a peer that
  // sends a larger one is disconnected before it is read (ZMQ_MAXMSGSIZE).
  // Requests carry it, so that a worker refuses an answer too large for it.
  int64_t max_reply_bytes = int64_t{256} << 20;
  bool log = true;  // to stderr: workers joining and leaving, retries, refusals
};

using Clock = std::chrono::steady_clock;

struct Job {
  JobRequest request;  // request.id is assigned by Submit
  std::string model;   // the model name; empty: any worker
  Clock::time_point deadline;
  std::function<void(JobReply)> done;
  // With request.progress_ms > 0: the worker's progress reports, before `done`.
  std::function<void(const JobProgress&)> progress;
  // True once the client has gone away: the job is dropped before it reaches a worker.
  std::function<bool()> abandoned;
  // Set by the broker: when it was submitted and last sent to a worker (the reply's queue_seconds).
  Clock::time_point submitted;
  Clock::time_point dispatched;
};

struct WorkerSnapshot {
  std::string id;
  WorkerInfo info;
  std::string state;     // "idle" | "busy"
  size_t in_flight = 0;  // requests it holds, at most info.slots
  uint64_t served = 0;
};

class Broker {
 public:
  static StatusOr<std::unique_ptr<Broker>> Create(const BrokerOptions& options);
  // A broker without its thread, for the fuzzer: bound, but driven by the
  // caller's Drive calls instead of the socket. Submit and the snapshots work
  // as with the thread; Stop answers what is left.
  static StatusOr<std::unique_ptr<Broker>> CreateDriven(const BrokerOptions& options);
  // One message from a worker as the thread would handle it, then the
  // deadlines, the dispatch and the published state, as after each poll.
  void Drive(const std::string& identity, Frames frames);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // Queues a job; fails (kUnavailable) when the queue is full, and then
  // `done` is not called.
  Status Submit(Job job);
  std::vector<WorkerSnapshot> Workers() const;
  // The class names of a model's workers (any worker's for ""), if one is known.
  std::optional<std::vector<std::string>> Classes(const std::string& model) const;
  // The distinct model names of the workers, sorted.
  std::vector<std::string> ModelNames() const;
  size_t QueueDepth() const;
  // Refuses new jobs (503) and waits up to `grace` for those queued and in
  // flight to be answered; returns whether they all were.
  bool Drain(std::chrono::milliseconds grace);
  bool draining() const { return draining_.load(); }
  // Stops the broker thread; jobs still queued or in flight get a 503.
  void Stop();

 private:
  void Wake();  // interrupts the broker thread's poll
  struct WorkerState {
    std::string identity;
    WorkerInfo info;
    Clock::time_point expiry;
    std::set<uint64_t> jobs;  // in flight: at most info.slots
    uint64_t served = 0;
  };
  struct InFlight {
    Job job;
    std::string worker;
    int attempts = 0;
  };
  struct Pending {
    Job job;
    int attempts = 0;
  };

  explicit Broker(const BrokerOptions& options);
  static StatusOr<std::unique_ptr<Broker>> Bind(const BrokerOptions& options);
  void Run();
  void Log(const char* format, ...) const __attribute__((format(printf, 2, 3)));
  void TakeInbox();         // the jobs submitted since, to the queue
  void AnswerWhatIsLeft();  // at the end: every job still here gets its one answer
  // The ZAP handler (ZeroMQ RFC 27): admits a CURVE client whose key is one
  // of the workers' keys.
  void Authenticate();
  void HandleWorkerMessage(const std::string& identity, Frames frames);
  void DropWorker(const std::string& identity, const std::string& why);
  void Requeue(InFlight in_flight, const std::string& why);
  void Dispatch();
  void ExpireDeadlines();
  void SendTo(const std::string& identity, const Frames& frames);
  void Publish();  // copies worker state for other threads

  BrokerOptions options_;
  zmq::context_t context_{1};
  zmq::socket_t zap_;  // before router_: the handler must be bound before the first client arrives
  zmq::socket_t router_;
  int wake_fd_ = -1;
  std::thread thread_;
  std::thread zap_thread_;
  std::set<std::string> admitted_;  // the workers' keys, 32 bytes each
  std::atomic<bool> stop_{false};
  std::atomic<bool> draining_{false};

  // Shared with submitting threads.
  mutable std::mutex inbox_mutex_;
  std::vector<Job> inbox_;
  uint64_t next_id_ = 1;
  std::vector<WorkerSnapshot> published_workers_;
  size_t published_depth_ = 0;
  size_t published_outstanding_ = 0;  // queued and in flight

  // Owned by the broker thread.
  std::map<std::string, WorkerState> workers_;
  std::deque<Pending> pending_;
  std::map<uint64_t, InFlight> in_flight_;
};

// A reply for a job the service could not serve.
JobReply ErrorReply(uint64_t id, const Status& status);

}  // namespace intgrads
