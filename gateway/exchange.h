// One HTTP request's answer (Pistache), shared by the gateway's routes
// (gateway/http_api.h): the writer, the route the request came by and when it
// arrived. Every answer goes through Send, which counts it in the metrics and
// writes it straight to the connection.
#pragma once

#include <pistache/http.h>
#include <pistache/router.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common/attributions.h"
#include "common/protocol.h"
#include "gateway/broker.h"
#include "gateway/metrics.h"

namespace intgrads {

extern const Pistache::Http::Mime::MediaType kJsonType;

// JSON text; messages may quote user input: invalid UTF-8 is replaced, never thrown on.
std::string DumpJson(const nlohmann::json& body);

// printf of one number.
std::string Printf(const char* format, double value);

// A request header's value as the client sent it. Pistache keeps the raw
// text of most headers; for the others, the typed header writes it (its
// Accept writes nothing, so the raw text comes first).
template <typename H>
std::string HeaderText(const Pistache::Rest::Request& request) {
  if (auto raw = request.headers().tryGetRaw(H::Name)) return raw->value();
  if (auto typed = request.headers().tryGet<H>()) {
    std::ostringstream text;
    typed->write(text);
    return text.str();
  }
  return {};
}

// An attribution's time, stage by stage, in seconds: reading the request
// and its images (decode), waiting for a worker (queue) and in the worker's
// queue (wait), the worker's part (compute: prepare, attribute, copy to the
// host, encode, gzip), and the rest in the gateway (the ZeroMQ hops, writing
// the answer): together, `total`.
std::vector<std::pair<std::string, double>> Stages(const JobReply& reply, double decode, double total);
// The Server-Timing header of those stages (durations in ms).
std::string ServerTiming(const std::vector<std::pair<std::string, double>>& stages);

// A request's body, taken over rather than copied (a body is up to
// --max-body-bytes): Pistache's router hands the handler its own copy of the
// request, which it drops once the handler returns.
inline std::string TakeBody(const Pistache::Rest::Request& request) {
  return std::move(const_cast<std::string&>(request.body()));  // NOLINT(cppcoreguidelines-pro-type-const-cast)
}

// A JSON body's parse holds the body and the pixels it reads, and for a body
// the fast scanner declines, nlohmann's document of it: at most this many
// times the body's bytes (docs/RELIABILITY.md, "Decoding").
constexpr uint64_t kJsonMemoryFactor = 4;

class Exchange;

// The request's query, each name and value percent-decoded (RFC 3986; '+'
// is a space), sorted; false (and a 400 sent) when one is not percent-encoded.
bool ReadQuery(const Pistache::Rest::Request& request, Exchange& exchange, QueryParams* query);

class OwnedSocket;

// Exchanges are made on Pistache's thread that reads the request.
class Exchange {
 public:
  Exchange(Pistache::Http::ResponseWriter writer, std::string route, Metrics& metrics);

  void Header(const std::string& name, const std::string& value);
  // A HEAD request: the answer's head alone, with the Content-Length its body would have.
  void HeadOnly() { head_only_ = true; }
  // Keeps `held` (a share of the decoding budget) until the exchange is gone: answered, and let go of.
  void Hold(std::shared_ptr<void> held) { held_.push_back(std::move(held)); }
  // Writes the answer straight to the connection, the body taken over, not
  // through ResponseWriter::send: Pistache 0.0.5 copies a body into a buffer
  // grown by doubling from 512 bytes and then copies it once more
  // (docs/PERFORMANCE.md, "What was tried").
  Pistache::Async::Promise<ssize_t> Send(int status, std::string body, const Pistache::Http::Mime::MediaType& type);
  Pistache::Async::Promise<ssize_t> Json(int status, const nlohmann::json& body) {
    return Send(status, DumpJson(body), kJsonType);
  }
  // {"error": message}; a 503 says Retry-After: 1.
  Pistache::Async::Promise<ssize_t> Error(int status, const std::string& message);
  Pistache::Async::Promise<ssize_t> Unauthorized();
  // A streamed answer (chunked): the head with the headers set so far, then
  // each chunk as it comes, then the end. Counted in the metrics at the end,
  // as a 200.
  void StartStream(const Pistache::Http::Mime::MediaType& type);
  void Chunk(const std::string& data);
  void EndStream();
  bool streaming() const { return streaming_; }
  bool gone() const { return writer_.getPeer() == nullptr; }
  Clock::time_point received() const { return received_; }

 private:
  Pistache::Http::ResponseWriter writer_;
  std::string route_;
  Metrics& metrics_;
  Clock::time_point received_;
  // The status line and headers; `length_field` is Content-Length or Transfer-Encoding.
  std::string Head(int status, const Pistache::Http::Mime::MediaType& type, const std::string& length_field);
  // Closes a connection whose answer said Connection: Close, once `sent` is written.
  Pistache::Async::Promise<ssize_t> Finished(Pistache::Async::Promise<ssize_t> sent);

  std::shared_ptr<OwnedSocket> close_after_answer_;  // when the answer says Connection: Close
  bool head_only_ = false;
  bool streaming_ = false;
  std::vector<std::shared_ptr<void>> held_;
};

}  // namespace intgrads
