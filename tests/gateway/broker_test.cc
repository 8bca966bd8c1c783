// The broker against workers played by the test itself (DEALER sockets
// speaking docs/PROTOCOL.md): a stranger cannot feed the pool answers, with
// CURVE and without.
#include "gateway/broker.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <zmq_addon.hpp>

#include "common/curve.h"
#include "tests/gateway/fake_worker.h"

namespace intgrads {
namespace {

WorkerInfo Info() { return FakeWorkerInfo({"a", "b"}); }

JobReply Reply(uint64_t id, const std::string& payload) {
  JobReply reply;
  reply.id = id;
  reply.payload = payload;
  return reply;
}

class BrokerTest : public ::testing::TestWithParam<bool> {  // whether the channel is CURVE's
 protected:
  void SetUp() override {
    options_.bind = "ipc:///tmp/intgrads-broker-test-" + std::to_string(getpid());
    gateway_ = MakeCurveKeyPair().value();
    admitted_ = MakeCurveKeyPair().value();
    stranger_ = MakeCurveKeyPair().value();
    if (GetParam()) {
      options_.secret_key = gateway_.secret_key;
      options_.worker_keys = {admitted_.public_key};
    }
    auto broker = Broker::Create(options_);
    ASSERT_TRUE(broker.ok()) << broker.status().message();
    broker_ = std::move(*broker);
  }
  // A worker with the admitted key (with CURVE), or one with a key the
  // broker does not know (none without CURVE).
  std::unique_ptr<FakeWorker> Admitted() {
    return std::make_unique<FakeWorker>(context_, options_.bind, GetParam() ? &admitted_ : nullptr,
                                        gateway_.public_key);
  }
  std::unique_ptr<FakeWorker> Unknown() {
    return std::make_unique<FakeWorker>(context_, options_.bind, GetParam() ? &stranger_ : nullptr,
                                        gateway_.public_key);
  }
  // The broker again, under options_ as the test changed them.
  void Restart() {
    broker_.reset();
    auto broker = Broker::Create(options_);
    ASSERT_TRUE(broker.ok()) << broker.status().message();
    broker_ = std::move(*broker);
  }
  // A job of one black pixel, answered to `done`, due within `seconds`.
  static Job OneJob(std::function<void(const JobReply&)> done, int seconds = 30) {
    Job job;
    job.request.image = {1, 1, 3, {0, 0, 0}};
    job.deadline = Clock::now() + std::chrono::seconds(seconds);
    job.done = std::move(done);
    job.abandoned = [] { return false; };
    return job;
  }
  void WaitForWorkers(size_t n) {
    for (int i = 0; i < 200 && broker_->Workers().size() != n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(broker_->Workers().size(), n);
  }
  BrokerOptions options_;
  CurveKeyPair gateway_, admitted_, stranger_;
  std::unique_ptr<Broker> broker_;
  zmq::context_t context_{1};
};

TEST_P(BrokerTest, OnlyTheAssignedWorkerCanAnswerARequest) {
  auto honest_worker = Admitted();
  FakeWorker& honest = *honest_worker;
  honest.Send(EncodeReady(Info()));
  WaitForWorkers(1);

  std::promise<JobReply> answered;
  std::atomic<int> calls{0};
  Job job;
  job.request.image = {1, 1, 3, {0, 0, 0}};
  job.deadline = Clock::now() + std::chrono::seconds(30);
  job.done = [&](const JobReply& reply) {
    if (calls++ == 0) answered.set_value(reply);
  };
  job.abandoned = [] { return false; };
  std::atomic<int64_t> progressed{0};
  job.request.progress_ms = 100;
  job.progress = [&](const JobProgress& p) { progressed = p.done; };
  ASSERT_TRUE(broker_->Submit(std::move(job)).ok());
  auto request = honest.Receive(std::chrono::seconds(5));
  ASSERT_TRUE(request.has_value());
  ASSERT_EQ(request->type, MessageType::kRequest);
  EXPECT_EQ(request->request.progress_ms, 100);
  JobProgress progress;
  progress.id = request->request.id;
  progress.total = 8;

  // A forger (with a key the gateway does not know, with CURVE) announces
  // itself and answers the request in flight first; then a worker answers
  // without having announced itself.
  auto forger = Unknown();
  forger->Send(EncodeReady(Info()));
  progress.done = 7;
  forger->Send(EncodeProgress(progress));
  forger->Send(EncodeReply(Reply(request->request.id, "forged")));
  auto stranger = Admitted();
  stranger->Send(EncodeProgress(progress));
  stranger->Send(EncodeReply(Reply(request->request.id, "forged")));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(calls.load(), 0);
  EXPECT_EQ(progressed.load(), 0);  // nor their progress reports
  // A worker that never announced itself is told to announce itself.
  auto told = stranger->Receive(std::chrono::seconds(2));
  ASSERT_TRUE(told.has_value());
  EXPECT_EQ(told->type, MessageType::kDisconnect);
  // With CURVE, the forger hears nothing, not even heartbeats.
  if (GetParam()) {
    EXPECT_FALSE(forger->Receive(std::chrono::milliseconds(300)).has_value());
  }

  progress.done = 4;
  honest.Send(EncodeProgress(progress));
  honest.Send(EncodeReply(Reply(request->request.id, "honest")));
  auto future = answered.get_future();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  const JobReply reply = future.get();
  EXPECT_TRUE(reply.ok());
  EXPECT_EQ(reply.payload, "honest");
  EXPECT_EQ(progressed.load(), 4);  // the assigned worker's report came first
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(calls.load(), 1);
  // With CURVE, the forger never became a member.
  EXPECT_EQ(broker_->Workers().size(), GetParam() ? 1u : 2u);
}

// A batching worker holds up to its slots; the rest wait for a free slot,
// then go to the worker holding fewest; a lost worker's requests are all retried.
TEST_P(BrokerTest, AWorkerHoldsUpToItsSlotsAndLosesNoneWhenItDies) {
  WorkerInfo batching = Info();
  batching.slots = 2;
  auto first_worker = Admitted();
  FakeWorker& first = *first_worker;
  first.Send(EncodeReady(batching));
  WaitForWorkers(1);
  std::mutex mutex;
  std::map<uint64_t, std::string> answers;
  auto submit = [&] {
    Job job;
    job.request.image = {1, 1, 3, {0, 0, 0}};
    job.deadline = Clock::now() + std::chrono::seconds(30);
    job.done = [&](const JobReply& reply) {
      std::lock_guard<std::mutex> lock(mutex);
      answers[reply.id] = reply.ok() ? reply.payload : reply.error;
    };
    job.abandoned = [] { return false; };
    ASSERT_TRUE(broker_->Submit(std::move(job)).ok());
  };
  for (int i = 0; i < 3; ++i) submit();
  std::vector<uint64_t> held;
  for (int i = 0; i < 2; ++i) {
    auto request = first.Receive(std::chrono::seconds(5));
    ASSERT_TRUE(request.has_value());
    held.push_back(request->request.id);
  }
  EXPECT_FALSE(first.Receive(std::chrono::milliseconds(300)).has_value());  // the third waits
  EXPECT_EQ(broker_->QueueDepth(), 1u);
  ASSERT_EQ(broker_->Workers().size(), 1u);
  EXPECT_EQ(broker_->Workers().front().in_flight, 2u);

  // A second worker (one slot) takes the third; the first goes away with two.
  auto second_worker = Admitted();
  FakeWorker& second = *second_worker;
  second.Send(EncodeReady(Info()));
  auto third = second.Receive(std::chrono::seconds(5));
  ASSERT_TRUE(third.has_value());
  first.Send(EncodeDisconnect());
  second.Send(EncodeReply(Reply(third->request.id, "third")));
  for (int i = 0; i < 2; ++i) {
    auto retried = second.Receive(std::chrono::seconds(5));
    ASSERT_TRUE(retried.has_value());
    EXPECT_TRUE(retried->request.id == held[0] || retried->request.id == held[1]);
    second.Send(EncodeReply(Reply(retried->request.id, "retried " + std::to_string(retried->request.id))));
  }
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (answers.size() == 3) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::lock_guard<std::mutex> lock(mutex);
  ASSERT_EQ(answers.size(), 3u);
  EXPECT_EQ(answers[third->request.id], "third");
  for (uint64_t id : held) EXPECT_EQ(answers[id], "retried " + std::to_string(id));
}

// A frame over max_reply_bytes disconnects its sender before it is read;
// the request it held is answered without it once the worker is dropped.
TEST_P(BrokerTest, AFrameOverTheLimitIsNeverRead) {
  options_.max_reply_bytes = 4096;
  options_.heartbeat_ms = 50;
  Restart();
  auto worker = Admitted();
  worker->Send(EncodeReady(Info()));
  WaitForWorkers(1);
  std::promise<JobReply> answered;
  ASSERT_TRUE(broker_->Submit(OneJob([&](const JobReply& reply) { answered.set_value(reply); }, 1)).ok());
  auto request = worker->Receive(std::chrono::seconds(5));
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->request.max_reply_bytes, 4096);  // so that a worker refuses a larger answer itself
  worker->Send(EncodeReply(Reply(request->request.id, std::string(4097, 'x'))));
  auto future = answered.get_future();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  const JobReply reply = future.get();
  EXPECT_EQ(reply.code, StatusCode::kUnavailable) << reply.error;
  EXPECT_TRUE(reply.payload.empty());
}

// A worker that falls silent (dead, or its link cut) is dropped after
// `liveness` heartbeats and the request it held goes to another.
TEST_P(BrokerTest, ASilentWorkerIsDroppedAndItsRequestRetried) {
  options_.heartbeat_ms = 50;
  Restart();
  auto silent = Admitted();
  silent->Send(EncodeReady(Info()));
  WaitForWorkers(1);
  std::promise<JobReply> answered;
  ASSERT_TRUE(broker_->Submit(OneJob([&](const JobReply& reply) { answered.set_value(reply); }, 10)).ok());
  auto held = silent->Receive(std::chrono::seconds(5));
  ASSERT_TRUE(held.has_value());
  // The silent one sends nothing more; a live one keeps its heartbeats and answers what comes.
  auto live = Admitted();
  live->Send(EncodeReady(Info()));
  auto future = answered.get_future();
  bool retried = false;
  for (int i = 0; i < 250 && future.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready; ++i) {
    live->Send(EncodeHeartbeat());
    auto request = live->Receive(std::chrono::milliseconds(20));
    if (request.has_value() && request->type == MessageType::kRequest) {
      EXPECT_EQ(request->request.id, held->request.id);
      retried = true;
      live->Send(EncodeReply(Reply(request->request.id, "live")));
    }
  }
  ASSERT_EQ(future.wait_for(std::chrono::seconds(1)), std::future_status::ready);
  EXPECT_TRUE(retried);
  const JobReply reply = future.get();
  EXPECT_TRUE(reply.ok()) << reply.error;
  EXPECT_EQ(reply.payload, "live");
  ASSERT_EQ(broker_->Workers().size(), 1u);  // the silent one is gone
}

// Past max_queued waiting jobs, Submit refuses at once (the gateway's 503);
// those queued are served when a worker comes.
TEST_P(BrokerTest, AFullQueueRefusesAtOnce) {
  options_.max_queued = 2;
  Restart();
  std::atomic<int> served{0};
  auto make = [&] { return OneJob([&](const JobReply& reply) { served += reply.ok() ? 1 : 0; }); };
  ASSERT_TRUE(broker_->Submit(make()).ok());
  ASSERT_TRUE(broker_->Submit(make()).ok());
  const Status refused = broker_->Submit(make());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), StatusCode::kUnavailable);
  EXPECT_NE(refused.message().find("queue is full"), std::string::npos) << refused.message();
  auto worker = Admitted();
  worker->Send(EncodeReady(Info()));
  for (int i = 0; i < 2; ++i) {
    auto request = worker->Receive(std::chrono::seconds(5));
    ASSERT_TRUE(request.has_value());
    worker->Send(EncodeReply(Reply(request->request.id, "ok")));
  }
  for (int i = 0; i < 200 && served.load() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(served.load(), 2);
  EXPECT_TRUE(broker_->Submit(make()).ok());  // room again
}

INSTANTIATE_TEST_SUITE_P(Channels, BrokerTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Curve" : "NoCurve"; });

}  // namespace
}  // namespace intgrads
