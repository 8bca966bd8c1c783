// What the gateway makes of one connection's bytes before Pistache's parser
// sees them, without sockets or Pistache (RequestGuard drives it; the tests
// and tests/fuzz/request_guard_fuzz.cc feed it bytes directly):
//
// - A request's head is held here until its blank line has arrived, then
//   handed on whole: Pistache 0.0.5 parses an incomplete head again from its
//   start each time bytes arrive, so a head sent in pieces cost time that
//   grew with the square of its length. A head that reaches max_head_bytes
//   without its blank line is refused (431) and nothing of it is parsed.
// - The head is checked before anything reads the body: its syntax, its
//   framing (Content-Length, Transfer-Encoding), its content coding, the
//   declared length against max_body_bytes, and what `check_fields` says of
//   its field values.
// - A chunked body is followed (ChunkedBody): a chunk larger than what is left
//   of max_body_bytes is refused (413) from its size line.
// - A request whose bytes overflow Pistache's buffer is refused (413).
// - Bytes past a request's end (the next request, pipelined) mark it, so that
//   its answer closes the connection.
//
//   RequestFramer framer(limits);
//   RequestFramer::Step step = framer.Feed(bytes);   // kForward: hand step.forward to the parser
//   framer.Dispatched();                              // when the parser has dispatched the request
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "gateway/request_head.h"

namespace intgrads {

// The largest request head (request line and fields) the gateway reads.
constexpr size_t kMaxHeadBytes = size_t{64} * 1024;

class RequestFramer {
 public:
  // Why the head's field values cannot be read, with the status to answer
  // (RequestGuard runs Pistache's own header parsers); empty when they can.
  using FieldCheck = std::function<std::string(const RequestHead& head, int* status)>;

  struct Limits {
    uint64_t max_body_bytes = uint64_t{32} << 20;
    size_t max_head_bytes = kMaxHeadBytes;
    FieldCheck check_fields;  // may be empty
  };

  enum class Verdict {
    kHold,     // kept here: the head is not complete yet
    kForward,  // hand `forward` to the parser
    kRefuse,   // answer `status` with `message`, close; the connection only drains from now on
    kDrop,     // read and dropped
  };

  struct Step {
    Verdict verdict = Verdict::kHold;
    std::string_view forward;     // kForward: valid until the next call
    bool request_starts = false;  // these bytes are a request's first
    bool send_continue = false;   // kForward: answer "100 Continue" before forwarding
    int status = 0;               // kRefuse
    std::string message;          // kRefuse
  };

  explicit RequestFramer(Limits limits);

  Step Feed(std::string_view bytes);
  // The parser has dispatched the request whose bytes were forwarded: the
  // next bytes start another request (after the rest of a chunked body's
  // trailer, which Pistache dispatches before it has read it).
  void Dispatched();
  // Refuses the request being received (the client took too long); later
  // bytes are dropped.
  void Refuse() { refused_ = true; }

  // The head of the request being received or dispatched, once complete.
  const std::optional<RequestHead>& head() const { return head_; }
  bool refused() const { return refused_; }
  // Whether a request has started arriving and is neither dispatched nor refused.
  bool receiving() const { return started_ && !refused_; }
  // Whether the answer to the current request closes the connection: it was
  // refused, did not ask to be kept alive (RequestHead::KeepsAlive), or came
  // with the next request behind it, which Pistache 0.0.5 drops (RFC 9112,
  // 9.3.2: the client then sends it again). Nothing before a head.
  std::optional<bool> AnswerCloses() const;

 private:
  Step Refusal(int status, std::string message);

  Limits limits_;
  bool refused_ = false;
  bool started_ = false;    // the current request's first bytes have arrived
  bool dropping_ = false;   // a pipelined request was dispatched: the rest is dropped
  std::string head_bytes_;  // while the head is incomplete
  std::string assembled_;   // the head and what came with it, forwarded at once
  std::optional<RequestHead> head_;
  uint64_t bytes_fed_ = 0;      // forwarded for this request: the parser's buffer's fill
  uint64_t request_bytes_ = 0;  // head and body, once known (0: not yet, or chunked)
  std::optional<ChunkedBody> chunked_;
  std::optional<ChunkedBody> trailer_;  // the end of the last request's chunked body
  bool pipelined_ = false;
};

}  // namespace intgrads
