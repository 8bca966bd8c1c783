#include "gateway/broker.h"

#include "common/curve.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <set>
#include <zmq_addon.hpp>

namespace intgrads {

JobReply ErrorReply(uint64_t id, const Status& status) {
  JobReply reply;
  reply.id = id;
  reply.code = status.code();
  reply.error = status.message();
  return reply;
}

Broker::Broker(const BrokerOptions& options)
    : options_(options), zap_(context_, zmq::socket_type::rep), router_(context_, zmq::socket_type::router) {}

StatusOr<std::unique_ptr<Broker>> Broker::Create(const BrokerOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<Broker> broker, Bind(options));
  broker->thread_ = std::thread([b = broker.get()] { b->Run(); });
  return broker;
}

StatusOr<std::unique_ptr<Broker>> Broker::CreateDriven(const BrokerOptions& options) { return Bind(options); }

void Broker::Drive(const std::string& identity, Frames frames) {
  TakeInbox();
  HandleWorkerMessage(identity, std::move(frames));
  ExpireDeadlines();
  Dispatch();
  Publish();
}

StatusOr<std::unique_ptr<Broker>> Broker::Bind(const BrokerOptions& options) {
  std::unique_ptr<Broker> broker(new Broker(options));
  const bool curve = !options.secret_key.empty();
  if (curve) {
    if (!CurveAvailable()) return InvalidError("this ZeroMQ was built without CURVE; worker keys cannot be used");
    if (options.worker_keys.empty()) return InvalidError("a secret key, but no worker keys to let in");
    for (const std::string& key : options.worker_keys) broker->admitted_.insert(CurveKeyBytes(key));
  }
  try {
    if (curve) {
      broker->zap_.set(zmq::sockopt::linger, 0);
      broker->zap_.bind("inproc://zeromq.zap.01");
      broker->router_.set(zmq::sockopt::curve_server, 1);
      broker->router_.set(zmq::sockopt::curve_secretkey, options.secret_key);
      broker->router_.set(zmq::sockopt::zap_domain, "intgrads-workers");
    }
    broker->router_.set(zmq::sockopt::maxmsgsize, options.max_reply_bytes);
    broker->router_.set(zmq::sockopt::linger, 0);
    broker->router_.set(zmq::sockopt::router_mandatory, 1);
    broker->router_.bind(options.bind);
  } catch (const zmq::error_t& e) {
    return InvalidError("cannot bind the worker endpoint " + options.bind + ": " + e.what());
  }
  if (curve) broker->zap_thread_ = std::thread([b = broker.get()] { b->Authenticate(); });
  broker->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (broker->wake_fd_ < 0) return InternalError("eventfd failed");
  return broker;
}

Broker::~Broker() {
  Stop();
  if (wake_fd_ >= 0) close(wake_fd_);
}

void Broker::Wake() {
  const uint64_t one = 1;
  // Fails only when the counter is full, and then a wake-up is pending anyway.
  if (write(wake_fd_, &one, sizeof(one)) < 0 && errno != EAGAIN) std::perror("intgrads-gateway: waking the broker");
}

void Broker::Stop() {
  if (stop_.exchange(true)) return;
  Wake();
  if (thread_.joinable()) {
    thread_.join();
  } else {
    AnswerWhatIsLeft();  // driven: the caller's thread is the broker's
  }
  if (zap_thread_.joinable()) zap_thread_.join();
}

void Broker::Log(const char* format, ...) const {
  if (!options_.log) return;
  std::va_list args;
  va_start(args, format);
  std::fputs("intgrads-gateway: ", stderr);
  std::vfprintf(stderr, format, args);
  va_end(args);
}

void Broker::TakeInbox() {
  std::vector<Job> arrived;
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    arrived.swap(inbox_);
  }
  for (Job& job : arrived) pending_.push_back({std::move(job), 0});
}

void Broker::Authenticate() {
  // Whom it refused lately, so that a stranger retrying is logged once a minute.
  std::map<std::string, Clock::time_point> refused;
  while (!stop_.load()) {
    zmq::pollitem_t items[] = {{static_cast<void*>(zap_), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 1, std::chrono::milliseconds(100));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    if (!(items[0].revents & ZMQ_POLLIN)) continue;
    std::vector<zmq::message_t> request;
    if (!zmq::recv_multipart(zap_, std::back_inserter(request), zmq::recv_flags::dontwait)) continue;
    // version, request id, domain, address, identity, mechanism, credentials...
    const bool curve = request.size() >= 7 && request[5].to_string_view() == "CURVE";
    const std::string key = curve ? request[6].to_string() : std::string();
    const bool admitted = curve && admitted_.count(key) > 0;
    const std::string address = request.size() >= 4 ? request[3].to_string() : "?";
    if (!admitted && (refused.count(address) == 0 || Clock::now() - refused[address] > std::chrono::minutes(1))) {
      refused[address] = Clock::now();
      Log("refused a worker from %s: %s\n", address.c_str(),
          curve ? "its key is not one of --worker-keys" : "it does not speak CURVE");
    }
    const std::string version = !request.empty() ? request[0].to_string() : "1.0";
    const std::string id = request.size() >= 2 ? request[1].to_string() : "";
    char user[kCurveKeyChars + 1] = {0};
    if (admitted) zmq_z85_encode(user, reinterpret_cast<const uint8_t*>(key.data()), key.size());
    const std::string reply[] = {version, id, admitted ? "200" : "400", admitted ? "OK" : "not an admitted worker",
                                 user,    ""};
    std::vector<zmq::const_buffer> frames;
    for (const std::string& frame : reply) frames.emplace_back(frame.data(), frame.size());
    zmq::send_multipart(zap_, frames);
  }
}

Status Broker::Submit(Job job) {
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    if (stop_.load() || draining_.load()) return UnavailableError("the gateway is shutting down");
    if (inbox_.size() + published_depth_ >= options_.max_queued) {
      return UnavailableError("the request queue is full (" + std::to_string(options_.max_queued) +
                              " waiting); retry shortly");
    }
    job.request.id = next_id_++;
    job.submitted = Clock::now();
    inbox_.push_back(std::move(job));
  }
  Wake();
  return Status::Ok();
}

std::vector<WorkerSnapshot> Broker::Workers() const {
  std::lock_guard<std::mutex> lock(inbox_mutex_);
  return published_workers_;
}

size_t Broker::QueueDepth() const {
  std::lock_guard<std::mutex> lock(inbox_mutex_);
  return published_depth_ + inbox_.size();
}

std::optional<std::vector<std::string>> Broker::Classes(const std::string& model) const {
  std::lock_guard<std::mutex> lock(inbox_mutex_);
  for (const WorkerSnapshot& w : published_workers_) {
    if (model.empty() || w.info.model == model) return w.info.classes;
  }
  return std::nullopt;
}

std::vector<std::string> Broker::ModelNames() const {
  std::lock_guard<std::mutex> lock(inbox_mutex_);
  std::set<std::string> names;
  for (const WorkerSnapshot& w : published_workers_) names.insert(w.info.model);
  return {names.begin(), names.end()};
}

void Broker::Publish() {
  std::vector<WorkerSnapshot> snapshot;
  for (const auto& [identity, w] : workers_) {
    std::string hex;
    for (unsigned char c : identity) {
      char buf[3];
      std::snprintf(buf, sizeof(buf), "%02x", c);
      hex += buf;
    }
    snapshot.push_back({hex, w.info, w.jobs.empty() ? "idle" : "busy", w.jobs.size(), w.served});
  }
  std::lock_guard<std::mutex> lock(inbox_mutex_);
  published_workers_ = std::move(snapshot);
  published_depth_ = pending_.size();
  published_outstanding_ = pending_.size() + in_flight_.size();
}

void Broker::SendTo(const std::string& identity, const Frames& frames) {
  std::vector<zmq::const_buffer> buffers;
  buffers.emplace_back(identity.data(), identity.size());
  for (const std::string& f : frames) buffers.emplace_back(f.data(), f.size());
  try {
    zmq::send_multipart(router_, buffers, zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    // EHOSTUNREACH: the worker is gone; its expiry will drop it.
    Log("send to a worker failed: %s\n", e.what());
  }
}

void Broker::Requeue(InFlight in_flight, const std::string& why) {
  const int attempts = in_flight.attempts;
  if (attempts >= options_.max_attempts || Clock::now() >= in_flight.job.deadline) {
    in_flight.job.done(
        ErrorReply(in_flight.job.request.id, UnavailableError("the request failed on " + std::to_string(attempts) +
                                                              " worker(s) (" + why + "); retry later")));
    return;
  }
  Log("retrying request %llu on another worker (%s)\n", static_cast<unsigned long long>(in_flight.job.request.id),
      why.c_str());
  pending_.push_front({std::move(in_flight.job), attempts});
}

void Broker::DropWorker(const std::string& identity, const std::string& why) {
  auto it = workers_.find(identity);
  if (it == workers_.end()) return;
  Log("worker %s (%s %s) dropped: %s\n", it->second.info.device.c_str(), it->second.info.family.c_str(),
      it->second.info.variant.c_str(), why.c_str());
  for (uint64_t id : it->second.jobs) {
    auto job = in_flight_.find(id);
    if (job != in_flight_.end()) {
      InFlight moved = std::move(job->second);
      in_flight_.erase(job);
      Requeue(std::move(moved), "its worker was lost: " + why);
    }
  }
  workers_.erase(it);
}

void Broker::HandleWorkerMessage(const std::string& identity, Frames frames) {
  auto message = DecodeMessage(std::move(frames));
  if (!message.ok()) {
    Log("bad message from a worker: %s\n", message.status().message().c_str());
    return;
  }
  const auto expiry = Clock::now() + std::chrono::milliseconds(options_.heartbeat_ms * options_.liveness);
  auto it = workers_.find(identity);
  switch (message->type) {
    case MessageType::kReady: {
      if (it != workers_.end()) DropWorker(identity, "announced itself again");
      WorkerState w;
      w.identity = identity;
      w.info = message->ready;
      w.expiry = expiry;
      workers_.emplace(identity, std::move(w));
      Log("worker ready: model '%s', %s %s on %s\n", message->ready.model.c_str(), message->ready.family.c_str(),
          message->ready.variant.c_str(), message->ready.device.c_str());
      return;
    }
    case MessageType::kDisconnect: DropWorker(identity, "it is shutting down"); return;
    case MessageType::kRequest: return;  // workers do not send requests
    case MessageType::kHeartbeat:
    case MessageType::kProgress:
    case MessageType::kReply: break;
  }
  if (it == workers_.end()) {
    // A worker we do not know (the gateway restarted): ask it to announce itself again.
    SendTo(identity, EncodeDisconnect());
    return;
  }
  it->second.expiry = expiry;
  if (message->type == MessageType::kProgress) {
    const auto job = in_flight_.find(message->progress.id);
    if (job != in_flight_.end() && job->second.worker == identity && job->second.job.progress) {
      job->second.job.progress(message->progress);
    }
    return;
  }
  if (message->type != MessageType::kReply) return;
  JobReply& reply = message->reply;
  auto job = in_flight_.find(reply.id);
  if (job == in_flight_.end() || job->second.worker != identity) return;  // a late answer to a retried job
  // The worker's state first, so that whoever the answer reaches sees it counted.
  it->second.jobs.erase(reply.id);
  ++it->second.served;
  InFlight answered = std::move(job->second);
  in_flight_.erase(job);
  reply.queue_seconds = std::chrono::duration<double>(answered.job.dispatched - answered.job.submitted).count();
  Publish();                            // before the answer leaves: a client that asks /v1/workers next sees it counted
  answered.job.done(std::move(reply));  // the payload moves on to the HTTP answer
}

void Broker::ExpireDeadlines() {
  const auto now = Clock::now();
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now >= it->job.deadline) {
      it->job.done(ErrorReply(it->job.request.id,
                              UnavailableError(it->job.model.empty() || workers_.empty()
                                                   ? "no worker could take the request before its deadline; retry later"
                                                   : "no worker serving model '" + it->job.model +
                                                         "' could take the request before its deadline; retry later")));
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = workers_.begin(); it != workers_.end();) {
    auto next = std::next(it);
    if (now >= it->second.expiry) DropWorker(it->first, "no heartbeat");
    it = next;
  }
}

bool Broker::Drain(std::chrono::milliseconds grace) {
  draining_.store(true);
  const auto deadline = Clock::now() + grace;
  while (Clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(inbox_mutex_);
      if (inbox_.empty() && published_outstanding_ == 0) return true;
      // Nothing in flight and no worker left to take what is queued: waiting cannot help.
      if (published_workers_.empty() && published_outstanding_ == published_depth_) return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

void Broker::Dispatch() {
  for (auto job = pending_.begin(); job != pending_.end();) {
    if (job->job.abandoned && job->job.abandoned()) {
      Log("dropped request %llu: its client went away\n", static_cast<unsigned long long>(job->job.request.id));
      job->job.done(ErrorReply(job->job.request.id, UnavailableError("the client went away")));
      job = pending_.erase(job);
      continue;
    }
    WorkerState* chosen = nullptr;
    for (auto& [identity, w] : workers_) {
      // Of the workers with a free slot, the one holding fewest requests,
      // then the one that has served least: spreads work over the pool.
      const bool free = w.jobs.size() < static_cast<size_t>(w.info.slots);  // slots >= 1: DecodeMessage
      if (free && (job->job.model.empty() || w.info.model == job->job.model) &&
          (chosen == nullptr || w.jobs.size() < chosen->jobs.size() ||
           (w.jobs.size() == chosen->jobs.size() && w.served < chosen->served))) {
        chosen = &w;
      }
    }
    if (chosen == nullptr) {
      ++job;
      continue;
    }
    chosen->jobs.insert(job->job.request.id);
    job->job.request.max_reply_bytes = options_.max_reply_bytes;
    job->job.dispatched = Clock::now();
    SendTo(chosen->identity, EncodeRequest(job->job.request));
    InFlight in_flight{std::move(job->job), chosen->identity, job->attempts + 1};
    in_flight_.emplace(in_flight.job.request.id, std::move(in_flight));
    job = pending_.erase(job);
  }
}

void Broker::Run() {
  const auto interval = std::chrono::milliseconds(options_.heartbeat_ms);
  auto next_heartbeat = Clock::now() + interval;
  while (!stop_.load()) {
    zmq::pollitem_t items[] = {{static_cast<void*>(router_), 0, ZMQ_POLLIN, 0}, {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(std::min(options_.heartbeat_ms, 100)));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t count = 0;
      if (read(wake_fd_, &count, sizeof(count)) < 0 && errno != EAGAIN) {
        std::perror("intgrads-gateway: reading the broker's eventfd");
      }
      TakeInbox();
    }
    while (items[0].revents & ZMQ_POLLIN) {
      std::vector<zmq::message_t> parts;
      const auto received = zmq::recv_multipart(router_, std::back_inserter(parts), zmq::recv_flags::dontwait);
      if (!received) break;
      if (parts.size() < 2) continue;
      Frames frames;
      for (size_t i = 1; i < parts.size(); ++i) frames.emplace_back(parts[i].to_string());
      HandleWorkerMessage(parts[0].to_string(), std::move(frames));
    }
    ExpireDeadlines();
    Dispatch();
    if (Clock::now() >= next_heartbeat) {
      for (const auto& [identity, w] : workers_) SendTo(identity, EncodeHeartbeat());
      next_heartbeat = Clock::now() + interval;
    }
    Publish();
  }
  AnswerWhatIsLeft();
}

void Broker::AnswerWhatIsLeft() {
  TakeInbox();
  for (Pending& p : pending_)
    p.job.done(ErrorReply(p.job.request.id, UnavailableError("the gateway is shutting down")));
  for (auto& [id, f] : in_flight_) f.job.done(ErrorReply(id, UnavailableError("the gateway is shutting down")));
  pending_.clear();
  in_flight_.clear();
  for (const auto& [identity, w] : workers_) SendTo(identity, EncodeDisconnect());
}

}  // namespace intgrads
