// libFuzzer target: the broker's handling of what peers on the worker port
// send (gateway/broker.h), driven on this thread (Broker::CreateDriven):
// messages from a few peer identities, with requests submitted between them.
// Every submitted job must get exactly one answer, and nothing may crash.
//
// Input: records of [peer byte][frame count byte] then, per frame, a length
// byte and that many bytes; a peer byte over 250 submits a job instead.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#include "gateway/broker.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static int run = 0;
  intgrads::BrokerOptions options;
  options.bind = "ipc:///tmp/intgrads-broker-fuzz-" + std::to_string(getpid()) + "-" + std::to_string(run++ % 2);
  options.log = false;
  options.max_queued = 8;
  auto broker = intgrads::Broker::CreateDriven(options);
  if (!broker.ok()) std::abort();
  std::map<uint64_t, int> answers;  // by job, how many times answered
  uint64_t submitted = 0;
  size_t at = 0;
  while (at + 2 <= size) {
    const uint8_t peer = data[at];
    const uint8_t count = data[at + 1] % 6;
    at += 2;
    if (peer > 250) {
      intgrads::Job job;
      job.request.image = {1, 1, 3, {0, 0, 0}};
      job.model = peer % 2 == 0 ? "default" : "";
      job.deadline = intgrads::Clock::now() + std::chrono::seconds(peer % 3 == 0 ? 0 : 60);
      const uint64_t mine = ++submitted;
      job.done = [&answers, mine](const intgrads::JobReply&) { ++answers[mine]; };
      job.abandoned = [peer] { return peer == 255; };
      if (!(*broker)->Submit(std::move(job)).ok()) answers[mine] = 1;  // refused: answered by the refusal
      continue;
    }
    intgrads::Frames frames;
    for (uint8_t f = 0; f < count && at < size; ++f) {
      const size_t length = data[at++];
      frames.emplace_back(reinterpret_cast<const char*>(data) + at, std::min(length, size - at));
      at += std::min(length, size - at);
    }
    (*broker)->Drive(std::string(1, static_cast<char>('a' + peer % 4)), std::move(frames));
  }
  (*broker)->Stop();
  for (uint64_t job = 1; job <= submitted; ++job) {
    if (answers[job] != 1) std::abort();
  }
  return 0;
}
