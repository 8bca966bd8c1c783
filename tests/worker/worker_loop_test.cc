// The worker's serving loop on its own: the test plays the gateway (a ROUTER
// speaking docs/PROTOCOL.md) to RunWorker on a model of a few lines, so that
// the announcement, answers, refusals, progress and goodbye are checked
// without a gateway process.
#include "worker/serving/worker_loop.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <zmq_addon.hpp>

#include "common/protocol.h"

namespace intgrads {
namespace {

using Clock = std::chrono::steady_clock;

// f(x) = (sum(x), -sum(x)) on 3 x 2 x 2 inputs: the IG of class 0 from the
// zero baseline is x itself.
class Sum final : public Classifier {
 public:
  Sum() {
    info_.classes = {"up", "down"};
    info_.input_size = 2;
    info_.variant = "sum";
    info_.normalization = {{0.0F, 0.0F, 0.0F}, {1.0F, 1.0F, 1.0F}};
  }
  torch::Tensor Forward(const torch::Tensor& x) const override {
    const torch::Tensor s = x.sum({1, 2, 3});
    return torch::stack({s, -s}, 1);
  }
  void To(const torch::TensorOptions& /*options*/) override {}
};

// The gateway's side: a ROUTER on a free loopback port, and RunWorker on a
// thread of its own dialling it.
class FakeGateway : public ::testing::Test {
 protected:
  void SetUp() override {
    router_.set(zmq::sockopt::linger, 0);
    router_.bind("tcp://127.0.0.1:*");
    WorkerOptions options;
    options.connect = {router_.get(zmq::sockopt::last_endpoint)};
    options.model_name = "summer";
    options.heartbeat_ms = 100;
    options.grace_ms = 2000;
    options.batch_requests = 2;
    worker_ = std::thread([this, options] { exit_code_ = RunWorker(model_, torch::kCPU, options, stop_); });
  }
  void TearDown() override {
    stop_ = true;
    if (worker_.joinable()) worker_.join();
  }
  void Send(const Frames& frames) {
    std::vector<zmq::const_buffer> buffers = {zmq::buffer(identity_)};
    for (const std::string& f : frames) buffers.emplace_back(f.data(), f.size());
    zmq::send_multipart(router_, buffers);
  }
  // The next message that is not a heartbeat, decoded, within five seconds.
  std::optional<Message> Receive() {
    const auto end = Clock::now() + std::chrono::seconds(5);
    while (Clock::now() < end) {
      zmq::pollitem_t item{static_cast<void*>(router_), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(20));
      if (!(item.revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> parts;
      (void)zmq::recv_multipart(router_, std::back_inserter(parts));
      identity_ = parts.front().to_string();
      Frames frames;
      for (size_t i = 1; i < parts.size(); ++i) frames.push_back(parts[i].to_string());
      auto message = DecodeMessage(frames);
      EXPECT_TRUE(message.ok()) << message.status().message();
      if (message.ok() && message->type != MessageType::kHeartbeat) return *message;
    }
    return std::nullopt;
  }
  // A request for class 0 of a 2 x 2 RGB image, pixels 0, 10, 20, ...
  static JobRequest Request(uint64_t id) {
    JobRequest r;
    r.id = id;
    r.n_steps = 4;
    r.image = {2, 2, 3, {}};
    r.format = Format::kJson;
    for (int i = 0; i < 12; ++i) r.image.pixels.push_back(static_cast<uint8_t>(10 * i));
    return r;
  }

  Sum model_;
  zmq::context_t context_;
  zmq::socket_t router_{context_, zmq::socket_type::router};
  std::string identity_;
  std::atomic<bool> stop_{false};
  int exit_code_ = -1;
  std::thread worker_;
};

TEST_F(FakeGateway, AnnouncesAnswersAndSaysGoodbye) {
  auto ready = Receive();
  ASSERT_TRUE(ready.has_value());
  ASSERT_EQ(ready->type, MessageType::kReady);
  EXPECT_EQ(ready->ready.model, "summer");
  EXPECT_EQ(ready->ready.classes, (std::vector<std::string>{"up", "down"}));
  EXPECT_EQ(ready->ready.input_size, 2);
  EXPECT_EQ(ready->ready.slots, 2);  // it batches two requests

  Send(EncodeRequest(Request(41)));
  auto reply = Receive();
  ASSERT_TRUE(reply.has_value());
  ASSERT_EQ(reply->type, MessageType::kReply);
  EXPECT_EQ(reply->reply.id, 41U);
  ASSERT_TRUE(reply->reply.ok()) << reply->reply.error;
  EXPECT_EQ(reply->reply.content_type, "application/json");
  EXPECT_EQ(reply->reply.target, 0);
  EXPECT_EQ(reply->reply.n_steps, 4);
  const auto doc = nlohmann::json::parse(reply->reply.payload);
  EXPECT_EQ(doc["method"], "gausslegendre");
  // Linear in x: the IG is x, to float32 rounding; the pixel 110 is 110/255 after ToTensor.
  const auto ig = doc["integrated_grads"].flatten();
  ASSERT_EQ(ig.size(), 12U);
  EXPECT_NEAR(ig.back().get<double>(), 110.0 / 255.0, 1e-5);
  EXPECT_NEAR(reply->reply.convergence_delta, 0.0, 1e-5);

  stop_ = true;
  auto goodbye = Receive();
  ASSERT_TRUE(goodbye.has_value());
  EXPECT_EQ(goodbye->type, MessageType::kDisconnect);
  worker_.join();
  EXPECT_EQ(exit_code_, 0);
}

// What the worker cannot compute it refuses with a status code by name;
// what it cannot read, if it has an id, it refuses too rather than drop.
TEST_F(FakeGateway, RefusesWhatItCannotComputeOrRead) {
  ASSERT_TRUE(Receive().has_value());  // ready
  JobRequest bad = Request(7);
  bad.n_steps = 0;
  Send(EncodeRequest(bad));
  auto refused = Receive();
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->reply.id, 7U);
  EXPECT_EQ(refused->reply.code, StatusCode::kInvalid);
  EXPECT_NE(refused->reply.error.find("n_steps"), std::string::npos) << refused->reply.error;

  Frames foreign = EncodeRequest(Request(8));
  const std::string known = R"("method":"gausslegendre")";
  foreign[0].replace(foreign[0].find(known), known.size(), R"("method":"simpson")");
  Send(foreign);
  auto unread = Receive();
  ASSERT_TRUE(unread.has_value());
  EXPECT_EQ(unread->reply.id, 8U);
  EXPECT_EQ(unread->reply.code, StatusCode::kInvalid);
  EXPECT_NE(unread->reply.error.find("'method'"), std::string::npos) << unread->reply.error;

  Send({R"({"v": 3, "type": "request"})"});  // no id: nothing to answer
  Send(EncodeRequest(Request(9)));           // and the worker goes on serving
  auto served = Receive();
  ASSERT_TRUE(served.has_value());
  EXPECT_EQ(served->reply.id, 9U);
  EXPECT_TRUE(served->reply.ok()) << served->reply.error;
}

// A request that asks for progress gets a report before its reply, with
// the points done of the total and the IG so far.
TEST_F(FakeGateway, ReportsProgressWhenAsked) {
  ASSERT_TRUE(Receive().has_value());  // ready
  JobRequest r = Request(3);
  r.progress_ms = 1;
  Send(EncodeRequest(r));
  auto progress = Receive();
  ASSERT_TRUE(progress.has_value());
  ASSERT_EQ(progress->type, MessageType::kProgress);
  EXPECT_EQ(progress->progress.id, 3U);
  EXPECT_EQ(progress->progress.total, 4);
  EXPECT_GT(progress->progress.done, 0);
  std::optional<Message> next;
  do {
    next = Receive();
  } while (next.has_value() && next->type == MessageType::kProgress);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->type, MessageType::kReply);
  EXPECT_TRUE(next->reply.ok()) << next->reply.error;
}

}  // namespace
}  // namespace intgrads
