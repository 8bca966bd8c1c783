#include "gateway/request_framer.h"

#include <algorithm>
#include <utility>

namespace intgrads {

RequestFramer::RequestFramer(Limits limits) : limits_(std::move(limits)) {}

RequestFramer::Step RequestFramer::Refusal(int status, std::string message) {
  refused_ = true;
  Step step;
  step.verdict = Verdict::kRefuse;
  step.status = status;
  step.message = std::move(message);
  return step;
}

std::optional<bool> RequestFramer::AnswerCloses() const {
  if (!head_) return std::nullopt;
  return refused_ || pipelined_ || !head_->KeepsAlive();
}

void RequestFramer::Dispatched() {
  if (pipelined_) {
    // The connection closes with this request's answer; what follows is
    // dropped, as Pistache dropped the rest of the bytes it came in.
    dropping_ = true;
    return;
  }
  std::optional<ChunkedBody> unfinished = std::move(chunked_);
  started_ = false;
  head_bytes_.clear();
  assembled_.clear();
  head_.reset();
  bytes_fed_ = 0;
  request_bytes_ = 0;
  chunked_.reset();
  // Pistache dispatches a chunked request at its last chunk ("0\r\n"),
  // before the trailer fields and the blank line that end the body; those
  // that arrive after the dispatch are the body's, not the next request's.
  if (unfinished && !unfinished->ended() && unfinished->error().empty()) trailer_ = std::move(unfinished);
}

RequestFramer::Step RequestFramer::Feed(std::string_view bytes) {
  Step step;
  if (refused_ || dropping_) {
    step.verdict = Verdict::kDrop;
    return step;
  }
  if (trailer_) {
    const size_t tail = trailer_->Feed(bytes);
    // Past its end, or if it is not a trailer after all, the bytes are the next request's.
    if (!trailer_->error().empty()) {
      trailer_.reset();
    } else {
      if (trailer_->ended()) trailer_.reset();
      bytes.remove_prefix(tail);
    }
    if (bytes.empty()) {
      step.verdict = Verdict::kDrop;
      return step;
    }
  }
  if (!started_) {
    started_ = true;
    step.request_starts = true;
  }
  std::string_view input = bytes;
  size_t body_from = 0;  // where this request's body starts in input
  if (!head_) {
    const size_t searched = head_bytes_.size();
    const size_t taken = std::min(bytes.size(), limits_.max_head_bytes - searched);
    head_bytes_.append(bytes.substr(0, taken));
    head_ = ParseRequestHead(head_bytes_, searched);
    if (!head_) {
      if (head_bytes_.size() < limits_.max_head_bytes) return step;  // kHold
      head_bytes_.clear();
      head_bytes_.shrink_to_fit();
      return Refusal(431, "request head: no blank line within " + std::to_string(limits_.max_head_bytes) +
                              " bytes (the request line and header fields may take at most that)");
    }
    const RequestHead& head = *head_;
    if (std::string error = head.SyntaxError(); !error.empty()) return Refusal(400, std::move(error));
    if (std::string error = head.FramingError(); !error.empty()) return Refusal(400, std::move(error));
    if (std::string error = head.ContentCodingError(); !error.empty()) return Refusal(415, std::move(error));
    const std::optional<uint64_t> declared = head.ContentLength();
    if (declared && *declared > limits_.max_body_bytes) {
      return Refusal(413, BodyTooLarge(declared, limits_.max_body_bytes));
    }
    if (limits_.check_fields) {
      int status = 400;
      if (std::string error = limits_.check_fields(head, &status); !error.empty()) {
        return Refusal(status, std::move(error));
      }
    }
    if (head.Field("transfer-encoding")) {
      chunked_.emplace(limits_.max_body_bytes);  // chunked: FramingError refused any other coding
    } else {
      request_bytes_ = head.size + declared.value_or(0);
    }
    step.send_continue = head.ExpectsContinue();
    // The head and whatever came with it, in one piece.
    assembled_ = std::move(head_bytes_);
    head_bytes_.clear();
    assembled_.append(bytes.substr(taken));
    input = assembled_;
    body_from = head.size;
  }
  // Pistache refuses a request when its buffer would overflow; refuse it first.
  if (bytes_fed_ + input.size() > limits_.max_body_bytes + limits_.max_head_bytes) {
    return Refusal(413, BodyTooLarge(std::nullopt, limits_.max_body_bytes));
  }
  // Bytes past the request's end are the next request: read by AnswerCloses.
  if (request_bytes_ != 0 && bytes_fed_ + input.size() > request_bytes_) pipelined_ = true;
  if (chunked_ && !chunked_->ended() && body_from < input.size()) {
    const size_t body = chunked_->Feed(input.substr(body_from));
    if (!chunked_->error().empty()) return Refusal(chunked_->error_status(), chunked_->error());
    if (chunked_->ended() && body_from + body < input.size()) pipelined_ = true;
  }
  bytes_fed_ += input.size();
  step.verdict = Verdict::kForward;
  step.forward = input;
  return step;
}

}  // namespace intgrads
