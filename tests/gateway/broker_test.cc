// The broker against workers played by the test itself (DEALER sockets
// speaking docs/PROTOCOL.md): a stranger cannot feed the pool answers.
#include "gateway/broker.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <future>
#include <map>
#include <mutex>
#include <zmq_addon.hpp>

namespace intgrads {
namespace {

// A DEALER that talks to the broker like a worker.
class FakeWorker {
 public:
  FakeWorker(zmq::context_t& context, const std::string& endpoint) : socket_(context, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
  }
  void Send(const Frames& frames) {
    std::vector<zmq::const_buffer> buffers;
    for (const std::string& f : frames) buffers.emplace_back(f.data(), f.size());
    zmq::send_multipart(socket_, buffers);
  }
  // The next message that is not a heartbeat, within `timeout`.
  std::optional<Message> Receive(std::chrono::milliseconds timeout) {
    const auto end = Clock::now() + timeout;
    while (Clock::now() < end) {
      zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(20));
      if (!(item.revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> parts;
      (void)zmq::recv_multipart(socket_, std::back_inserter(parts));
      Frames frames;
      for (auto& p : parts) frames.push_back(p.to_string());
      auto message = DecodeMessage(frames);
      if (message.ok() && message->type != MessageType::kHeartbeat) return *message;
    }
    return std::nullopt;
  }

 private:
  zmq::socket_t socket_;
};

WorkerInfo Info(const std::string& token) {
  WorkerInfo info;
  info.model = "default";
  info.family = "lanet";
  info.variant = "C16-L8";
  info.device = "cpu";
  info.classes = {"a", "b"};
  info.token = token;
  return info;
}

JobReply Reply(uint64_t id, const std::string& payload) {
  JobReply reply;
  reply.id = id;
  reply.payload = payload;
  return reply;
}

class BrokerTest : public ::testing::TestWithParam<std::string> {  // the deployment's token, or none
 protected:
  void SetUp() override {
    options_.bind = "ipc:///tmp/intgrads-broker-test-" + std::to_string(getpid());
    options_.token = GetParam();
    auto broker = Broker::Create(options_);
    ASSERT_TRUE(broker.ok()) << broker.status().message();
    broker_ = std::move(*broker);
  }
  void WaitForWorkers(size_t n) {
    for (int i = 0; i < 200 && broker_->Workers().size() != n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(broker_->Workers().size(), n);
  }
  BrokerOptions options_;
  std::unique_ptr<Broker> broker_;
  zmq::context_t context_{1};
};

TEST_P(BrokerTest, OnlyTheAssignedWorkerCanAnswerARequest) {
  FakeWorker honest(context_, options_.bind);
  honest.Send(EncodeReady(Info(options_.token)));
  WaitForWorkers(1);

  std::promise<JobReply> answered;
  std::atomic<int> calls{0};
  Job job;
  job.request.height = job.request.width = 1;
  job.request.pixels = std::string(3, '\0');
  job.deadline = Clock::now() + std::chrono::seconds(30);
  job.done = [&](const JobReply& reply) {
    if (calls++ == 0) answered.set_value(reply);
  };
  job.abandoned = [] { return false; };
  ASSERT_TRUE(broker_->Submit(std::move(job)).ok());
  auto request = honest.Receive(std::chrono::seconds(5));
  ASSERT_TRUE(request.has_value());
  ASSERT_EQ(request->type, MessageType::kRequest);

  // A stranger (with the right token when there is none to know) joins and
  // answers the request in flight first; then one answers without joining.
  FakeWorker forger(context_, options_.bind);
  forger.Send(EncodeReady(Info(options_.token.empty() ? "" : "wrong token")));
  forger.Send(EncodeReply(Reply(request->request.id, "forged")));
  FakeWorker stranger(context_, options_.bind);
  stranger.Send(EncodeReply(Reply(request->request.id, "forged")));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(calls.load(), 0);
  // A stranger that never announced itself is told to announce itself.
  auto told = stranger.Receive(std::chrono::seconds(2));
  ASSERT_TRUE(told.has_value());
  EXPECT_EQ(told->type, MessageType::kDisconnect);

  honest.Send(EncodeReply(Reply(request->request.id, "honest")));
  auto future = answered.get_future();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  const JobReply reply = future.get();
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.payload, "honest");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(calls.load(), 1);
  // With a token, the forger never became a member.
  EXPECT_EQ(broker_->Workers().size(), options_.token.empty() ? 2u : 1u);
}

// A batching worker holds up to its slots; the rest wait for a free slot,
// then go to the worker holding fewest; a lost worker's requests are all retried.
TEST_P(BrokerTest, AWorkerHoldsUpToItsSlotsAndLosesNoneWhenItDies) {
  WorkerInfo batching = Info(options_.token);
  batching.slots = 2;
  FakeWorker first(context_, options_.bind);
  first.Send(EncodeReady(batching));
  WaitForWorkers(1);
  std::mutex mutex;
  std::map<uint64_t, std::string> answers;
  auto submit = [&] {
    Job job;
    job.request.height = job.request.width = 1;
    job.request.pixels = std::string(3, '\0');
    job.deadline = Clock::now() + std::chrono::seconds(30);
    job.done = [&](const JobReply& reply) {
      std::lock_guard<std::mutex> lock(mutex);
      answers[reply.id] = reply.status == 200 ? reply.payload : reply.error;
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
  FakeWorker second(context_, options_.bind);
  second.Send(EncodeReady(Info(options_.token)));
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

INSTANTIATE_TEST_SUITE_P(Tokens, BrokerTest, ::testing::Values(std::string(), std::string("s3cret")),
                         [](const auto& info) { return info.param.empty() ? "NoToken" : "WithToken"; });

}  // namespace
}  // namespace intgrads
