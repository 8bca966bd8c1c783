// HttpApi on its own: the gateway's HTTP side and broker in this process on
// loopback, a worker played by the test (tests/gateway/fake_worker.h), and
// plain HTTP requests: the routes, the refusals made before any worker is
// asked, the job a worker is handed and how its reply and status code
// become the HTTP answer.
#include "gateway/http_api.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/http_client.h"
#include "tests/gateway/fake_worker.h"

namespace intgrads {
namespace {

using nlohmann::json;

class HttpApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    BrokerOptions broker_options;
    broker_options.bind = "ipc:///tmp/intgrads-http-api-test-" + std::to_string(getpid());
    broker_options.log = false;
    broker_ = std::move(Broker::Create(broker_options)).value();
    HttpOptions options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.request_timeout_ms = 10000;
    api_ = std::make_unique<HttpApi>(*broker_, options);
    auto port = api_->Start();
    ASSERT_TRUE(port.ok()) << port.status().message();
    base_ = "http://127.0.0.1:" + std::to_string(*port);
    worker_ = std::make_unique<FakeWorker>(context_, broker_options.bind);
  }
  void TearDown() override {
    api_->Shutdown();
    broker_->Stop();
  }
  HttpAnswer Call(const std::string& method, const std::string& path, const std::string& body = "",
                  const std::string& content_type = "application/json") {
    auto answer = HttpRequest(method, base_ + path, {{"Content-Type", content_type}}, body, 10);
    EXPECT_TRUE(answer.ok()) << answer.status().message();
    return answer.ok() ? *answer : HttpAnswer{};
  }
  // The fake worker announces a CIFAR-10 model and waits to be known.
  void Announce() {
    worker_->Send(EncodeReady(FakeWorkerInfo(Cifar10Classes())));
    for (int i = 0; i < 200 && broker_->Workers().empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(broker_->Workers().size(), 1U);
  }
  // The request the fake worker is handed next, answered with `reply` (its id set here).
  JobRequest Serve(JobReply reply) {
    auto message = worker_->Receive(std::chrono::seconds(5));
    EXPECT_TRUE(message.has_value() && message->type == MessageType::kRequest);
    if (!message.has_value()) return {};
    reply.id = message->request.id;
    worker_->Send(EncodeReply(std::move(reply)));
    return message->request;
  }

  zmq::context_t context_{1};
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<HttpApi> api_;
  std::unique_ptr<FakeWorker> worker_;
  std::string base_;
};

const char kOriginalBody[] =
    R"({"img_data": [[[0, 0, 0], [255, 255, 255]]], "target_class": "cat", "n_steps": 7, "method": "riemann_left"})";

TEST_F(HttpApiTest, RoutesAnswerInJsonBeforeAnyWorker) {
  EXPECT_EQ(Call("GET", "/healthz").status, 200);
  const HttpAnswer ready = Call("GET", "/readyz");
  EXPECT_EQ(ready.status, 503);  // no worker yet
  const HttpAnswer missing = Call("GET", "/nowhere");
  EXPECT_EQ(missing.status, 404);
  EXPECT_TRUE(json::parse(missing.body, nullptr, false).contains("error")) << missing.body;
  const HttpAnswer wrong = Call("GET", "/v1/attributions");
  EXPECT_EQ(wrong.status, 405);
  EXPECT_EQ(wrong.headers.at("allow"), "POST");
  const HttpAnswer unknown = Call("POST", "/v1/attributions?method=simpson", R"({"img_data": [[[1, 2, 3]]]})");
  EXPECT_EQ(unknown.status, 422) << unknown.body;
  EXPECT_NE(unknown.body.find("unknown method 'simpson'"), std::string::npos) << unknown.body;
  const HttpAnswer not_json = Call("POST", "/model/", "{not json");
  EXPECT_EQ(not_json.status, 400) << not_json.body;
  EXPECT_EQ(Call("GET", "/openapi.json").headers.at("content-type"), "application/json");
}

TEST_F(HttpApiTest, TheOriginalsRequestBecomesOneJobAndItsReplyTheAnswer) {
  Announce();
  std::future<HttpAnswer> answer =
      std::async(std::launch::async, [&] { return Call("POST", "/model/", kOriginalBody); });
  JobReply reply;
  reply.payload = "the worker's bytes";
  reply.target = 3;
  reply.probabilities.assign(10, 0.1);
  const JobRequest job = Serve(reply);
  EXPECT_EQ(job.target, 3);  // cat
  EXPECT_EQ(job.n_steps, 7);
  EXPECT_EQ(job.method, Method::kRiemannLeft);
  EXPECT_EQ(job.format, Format::kGzip);
  EXPECT_EQ((std::vector<int>{job.image.height, job.image.width, job.image.channels}), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(job.image.pixels, (std::vector<uint8_t>{0, 0, 0, 255, 255, 255}));
  const HttpAnswer got = answer.get();
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.body, "the worker's bytes");
  EXPECT_EQ(got.headers.at("content-type"), "application/gzip");
}

// The worker names an outcome; the gateway alone picks its HTTP status.
TEST_F(HttpApiTest, AWorkersStatusCodeBecomesItsHttpStatus) {
  Announce();
  for (const auto& [code, http] : std::vector<std::pair<StatusCode, int>>{
           {StatusCode::kInvalid, 422}, {StatusCode::kTooLarge, 413}, {StatusCode::kInternal, 500}}) {
    std::future<HttpAnswer> answer =
        std::async(std::launch::async, [&] { return Call("POST", "/model/", kOriginalBody); });
    JobReply reply;
    reply.code = code;
    reply.error = "the worker says why";
    Serve(reply);
    const HttpAnswer got = answer.get();
    EXPECT_EQ(got.status, http) << StatusCodeName(code);
    EXPECT_NE(got.body.find("the worker says why"), std::string::npos) << got.body;
  }
}

}  // namespace
}  // namespace intgrads
