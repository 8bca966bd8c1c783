// A worker played by a test: a DEALER speaking docs/PROTOCOL.md to a
// gateway's broker (tests/gateway/broker_test.cc, http_api_test.cc).
#pragma once

#include <chrono>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>
#include <zmq_addon.hpp>

#include "common/curve.h"
#include "common/protocol.h"

namespace intgrads {

// A DEALER that talks to the broker like a worker.
class FakeWorker {
 public:
  // With `own` keys, a CURVE client of the gateway whose public key is `gateway_key`.
  FakeWorker(zmq::context_t& context, const std::string& endpoint, const CurveKeyPair* own = nullptr,
             const std::string& gateway_key = "")
      : socket_(context, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    if (own != nullptr) {
      socket_.set(zmq::sockopt::curve_serverkey, gateway_key);
      socket_.set(zmq::sockopt::curve_publickey, own->public_key);
      socket_.set(zmq::sockopt::curve_secretkey, own->secret_key);
    }
    socket_.connect(endpoint);
  }
  void Send(const Frames& frames) {
    std::vector<zmq::const_buffer> buffers;
    for (const std::string& f : frames) buffers.emplace_back(f.data(), f.size());
    zmq::send_multipart(socket_, buffers);
  }
  // The next message that is not a heartbeat, within `timeout`.
  std::optional<Message> Receive(std::chrono::milliseconds timeout) {
    using Clock = std::chrono::steady_clock;
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

// What a fake worker announces: the model "default", a LaNet on the CPU, of `classes`.
inline WorkerInfo FakeWorkerInfo(std::vector<std::string> classes) {
  WorkerInfo info;
  info.model = "default";
  info.family = "lanet";
  info.variant = "fake";
  info.device = "cpu";
  info.classes = std::move(classes);
  return info;
}

}  // namespace intgrads
