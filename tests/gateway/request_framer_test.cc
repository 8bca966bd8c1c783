#include "gateway/request_framer.h"

#include <gtest/gtest.h>

#include <string>

namespace intgrads {
namespace {

using Verdict = RequestFramer::Verdict;

RequestFramer::Limits Limits(uint64_t max_body_bytes = 1024, size_t max_head_bytes = 256) {
  RequestFramer::Limits limits;
  limits.max_body_bytes = max_body_bytes;
  limits.max_head_bytes = max_head_bytes;
  return limits;
}

// Pistache parsed an incomplete head again from its start every time bytes
// arrived; the framer hands it over once, whole, however it arrives.
TEST(RequestFramer, HoldsTheHeadUntilItsBlankLineThenForwardsItWhole) {
  const std::string head = "POST /model/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n";
  const std::string request = head + "hello";
  RequestFramer framer(Limits());
  std::string forwarded;
  int forwards = 0;
  for (size_t i = 0; i < request.size(); ++i) {
    const RequestFramer::Step step = framer.Feed(request.substr(i, 1));
    EXPECT_EQ(step.request_starts, i == 0);
    if (i + 1 < head.size()) {
      EXPECT_EQ(step.verdict, Verdict::kHold) << i;
      continue;
    }
    ASSERT_EQ(step.verdict, Verdict::kForward) << i;
    forwarded += step.forward;
    ++forwards;
  }
  EXPECT_EQ(forwarded, request);
  EXPECT_EQ(forwards, 6);  // the head at once, then the body byte by byte
  ASSERT_TRUE(framer.head().has_value());
  EXPECT_EQ(framer.head()->target, "/model/");
}

TEST(RequestFramer, WhatCameWithTheHeadIsForwardedWithIt) {
  RequestFramer framer(Limits());
  EXPECT_EQ(framer.Feed("POST /model/ HTTP/1.1\r\nContent-Le").verdict, Verdict::kHold);
  const RequestFramer::Step step = framer.Feed("ngth: 5\r\n\r\nhel");
  ASSERT_EQ(step.verdict, Verdict::kForward);
  EXPECT_EQ(step.forward, "POST /model/ HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel");
  EXPECT_TRUE(framer.AnswerCloses().value());  // it did not ask for keep-alive
}

TEST(RequestFramer, AHeadThatReachesTheLimitWithoutItsEndIsA431AndNothingIsForwarded) {
  RequestFramer framer(Limits(1024, 256));
  RequestFramer::Step step = framer.Feed("GET / HTTP/1.1\r\nX-Long: " + std::string(200, 'a'));
  EXPECT_EQ(step.verdict, Verdict::kHold);
  step = framer.Feed(std::string(100, 'a'));
  EXPECT_EQ(step.verdict, Verdict::kRefuse);
  EXPECT_EQ(step.status, 431);
  EXPECT_EQ(step.message,
            "request head: no blank line within 256 bytes (the request line and header fields may take at most that)");
  EXPECT_TRUE(framer.refused());
  EXPECT_EQ(framer.Feed("\r\n\r\n").verdict, Verdict::kDrop);  // the connection only drains from now on
  // A head of exactly the limit is read.
  std::string exact = "GET / HTTP/1.1\r\nX: ";
  exact += std::string(256 - exact.size() - 4, 'b') + "\r\n\r\n";
  ASSERT_EQ(exact.size(), 256U);
  RequestFramer at_limit(Limits(1024, 256));
  EXPECT_EQ(at_limit.Feed(exact).verdict, Verdict::kForward);
}

TEST(RequestFramer, TheHeadIsCheckedBeforeAnyBodyIsRead) {
  struct Case {
    std::string head;
    int status;
  };
  for (const Case& c : std::vector<Case>{
           {"POST /model/ HTTP/1.1\r\nContent-Length: 1025\r\n\r\n", 413},
           {"POST /model/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
           {"POST /model/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
           {"POST /model/ HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\n", 415},
           {"POST /model/ HTTP/2\r\n\r\n", 400},
           {"POST /model/ HTTP/1.1\r\nno colon\r\n\r\n", 400},
       }) {
    RequestFramer framer(Limits());
    const RequestFramer::Step step = framer.Feed(c.head);
    EXPECT_EQ(step.verdict, Verdict::kRefuse) << c.head;
    EXPECT_EQ(step.status, c.status) << c.head;
  }
  RequestFramer::Limits checked = Limits();
  checked.check_fields = [](const RequestHead& head, int* status) {
    *status = 415;
    return head.Field("x-bad") ? std::string("x-bad") : std::string();
  };
  RequestFramer framer(checked);
  const RequestFramer::Step step = framer.Feed("GET / HTTP/1.1\r\nX-Bad: 1\r\n\r\n");
  EXPECT_EQ(step.verdict, Verdict::kRefuse);
  EXPECT_EQ(step.status, 415);
}

TEST(RequestFramer, AChunkOverTheLimitIsA413AndAChunkedBodyEndsWhereItEnds) {
  const std::string head =
      "POST /v1/attributions HTTP/1.1\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const std::string size : {"ffffffffffffffff", "40000000", "401"}) {
    RequestFramer framer(Limits(1024));
    EXPECT_EQ(framer.Feed(head).verdict, Verdict::kForward);
    const RequestFramer::Step step = framer.Feed(size + "\r\n");
    EXPECT_EQ(step.verdict, Verdict::kRefuse) << size;
    EXPECT_EQ(step.status, 413) << size;
  }
  RequestFramer framer(Limits(1024));
  const RequestFramer::Step step = framer.Feed(head + "400\r\n" + std::string(1024, 'x') + "\r\n0\r\n\r\n");
  EXPECT_EQ(step.verdict, Verdict::kForward);
  EXPECT_FALSE(framer.AnswerCloses().value());
}

TEST(RequestFramer, BytesPastTheRequestMarkItPipelined) {
  RequestFramer framer(Limits());
  const std::string get = "GET /healthz HTTP/1.1\r\nConnection: keep-alive\r\n\r\n";
  EXPECT_EQ(framer.Feed(get).verdict, Verdict::kForward);
  EXPECT_FALSE(framer.AnswerCloses().value());
  framer.Dispatched();
  EXPECT_FALSE(framer.AnswerCloses().has_value());  // no head yet
  EXPECT_EQ(framer.Feed(get + get).verdict, Verdict::kForward);
  EXPECT_TRUE(framer.AnswerCloses().value());
  framer.Dispatched();
  EXPECT_EQ(framer.Feed(get).verdict, Verdict::kDrop);  // closed with the answer: the rest is dropped
}

TEST(RequestFramer, AChunkedBodysTrailerAfterTheDispatchIsNotTheNextRequest) {
  RequestFramer framer(Limits());
  const std::string chunked =
      "POST /model/ HTTP/1.1\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n";
  EXPECT_EQ(framer.Feed(chunked).verdict, Verdict::kForward);
  framer.Dispatched();  // Pistache dispatches at the last chunk
  EXPECT_EQ(framer.Feed("X-T: 1\r\n").verdict, Verdict::kDrop);
  RequestFramer::Step step = framer.Feed("\r\nGET /healthz HTTP/1.1\r\n\r\n");
  EXPECT_EQ(step.verdict, Verdict::kForward);
  EXPECT_TRUE(step.request_starts);
  EXPECT_EQ(step.forward, "GET /healthz HTTP/1.1\r\n\r\n");
}

TEST(RequestFramer, BytesOverTheParsersBufferAreA413) {
  RequestFramer framer(Limits(16, 256));
  EXPECT_EQ(framer.Feed("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").verdict, Verdict::kForward);
  // Chunks of one byte: 16 bytes of data, but 6 bytes each on the wire.
  RequestFramer::Step step;
  for (int i = 0; i < 100 && step.verdict != Verdict::kRefuse; ++i) step = framer.Feed("1\r\nx\r\n");
  EXPECT_EQ(step.verdict, Verdict::kRefuse);
  EXPECT_EQ(step.status, 413);
}

TEST(RequestFramer, ARefusedRequestOnlyDrains) {
  RequestFramer framer(Limits());
  EXPECT_EQ(framer.Feed("GET / HTTP/1.1\r\n").verdict, Verdict::kHold);
  EXPECT_TRUE(framer.receiving());
  framer.Refuse();  // the client timer
  EXPECT_FALSE(framer.receiving());
  EXPECT_EQ(framer.Feed("\r\n").verdict, Verdict::kDrop);
}

}  // namespace
}  // namespace intgrads
