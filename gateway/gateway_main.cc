// intgrads-gateway: the HTTP front and the ZeroMQ broker.
//   intgrads-gateway --host H --port P --bind-workers tcp://*:5555
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "common/curve.h"
#include "common/flags.h"
#include "common/http_client.h"
#include "common/memory.h"
#include "common/secret.h"
#include "gateway/broker.h"
#include "gateway/http_api.h"

namespace {

void PrintHelp() {
  std::printf(
      "usage: intgrads-gateway [--host H] [--port P] [--bind-workers ENDPOINT] [options]\n\n"
      "Accepts attribution requests over HTTP and hands them to intgrads-worker processes over ZeroMQ.\n\n"
      "  -h, --host H             HTTP bind address (default localhost)\n"
      "  -p, --port P             HTTP port (default 8888; 0 picks a free one)\n"
      "  --bind-workers ENDPOINT  where workers connect (default tcp://127.0.0.1:5555)\n"
      "  --threads N              HTTP threads (default 2)\n"
      "  --max-body-bytes N       largest request body (default 33554432)\n"
      "  --max-image-side N       largest image side in pixels (default 4096)\n"
      "  --max-pixels N           largest image area in pixels (default 16777216)\n"
      "  --max-n-steps N          largest n_steps (default 1024)\n"
      "  --max-paths N            most paths per image: SmoothGrad samples x baselines (default 64)\n"
      "  --max-targets N          most classes explained per image: a target list or top_k (default 16)\n"
      "  --max-images N           most images in one /v1/attributions request (default 16)\n"
      "  --max-request-pixels N   most pixels of all of one request's images together, the baseline image\n"
      "                           once per image, checked from their headers before decoding (default 16777216)\n"
      "  --decode-threads N       threads that read request bodies and decode images (default 2)\n"
      "  --decode-memory-mb N     memory for the requests in hand: bodies being read, and images' pixels\n"
      "                           until answered; past it, 503 with Retry-After (default 512)\n"
      "  --request-timeout-ms N   a request's deadline, queueing and computing (default 300000)\n"
      "  --client-timeout-ms N    how long a client may take to send its request (default 30000), else 408\n"
      "  --heartbeat-ms N         worker heartbeat interval (default 1000; a worker is dropped after 3 missed)\n"
      "  --token TOKEN            require 'Authorization: Bearer TOKEN' on the data and attribution routes (the\n"
      "                           pages, /openapi.json and health stay open)\n"
      "                           (default: $INTGRADS_TOKEN; none if unset)\n"
      "  --secret-key FILE        the gateway's CURVE secret key for the worker channel (intgrads-keygen;\n"
      "                           default: the key in $INTGRADS_GATEWAY_SECRET_KEY)\n"
      "  --worker-keys PATH       the public keys of the workers let in: a file of keys, one a line, or a\n"
      "                           directory of .pub files (default: the keys in $INTGRADS_WORKER_PUBLIC_KEYS)\n"
      "  --insecure-workers       bind a tcp worker endpoint without keys: whoever reaches it joins the pool,\n"
      "                           receives requests' images and answers them\n"
      "  --max-reply-bytes N      the largest frame a worker may send, an answer's payload (default 268435456)\n"
      "  --max-stream-ig-bytes N  a streamed answer's progress events carry the IG so far up to N bytes of it,\n"
      "                           then the counts alone (default 8388608)\n"
      "  --grace-ms N             on SIGTERM/SIGINT, how long requests in flight may finish (default 30000)\n"
      "  --port-file PATH         write the HTTP port bound to PATH once serving\n"
      "  --probe URL              serve nothing: GET URL and exit 0 on a 200, else 1 (a container's health\n"
      "                           check, where there is no curl)\n"
      "  --help                   this text\n");
}

}  // namespace

// --probe URL: 0 when URL answers 200 within 5 s.
int Probe(const std::string& url) {
  auto answer = intgrads::HttpRequest("GET", url, {}, "", 5);
  if (!answer.ok()) {
    std::fprintf(stderr, "intgrads-gateway: probe %s: %s\n", url.c_str(), answer.status().message().c_str());
    return 1;
  }
  if (answer->status != 200) {
    std::fprintf(stderr, "intgrads-gateway: probe %s: %d %s\n", url.c_str(), answer->status, answer->body.c_str());
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  using namespace intgrads;
  if (argc == 3 && std::string(argv[1]) == "--probe") return Probe(argv[2]);
  // An answer (a megabyte or more at n_steps 50) is copied on its way out:
  // from ZeroMQ into the reply, and by Pistache into its growing response
  // buffer. Above glibc's mmap threshold every such buffer is fresh pages,
  // each faulting in on first touch. Kept on the heap, and the freed heap
  // kept for reuse, the same copies cost a third of the time.
  KeepFreedMemory(16 << 20, 64 << 20);
  std::vector<std::string> args(argv + 1, argv + argc);
  BrokerOptions broker_options;
  HttpOptions http_options;
  std::string port_file, secret_key_file, worker_keys_path;
  bool insecure = false;
  int grace_ms = 30000;
  FlagReader reader;
  reader.program = "intgrads-gateway";
  reader.print_help = PrintHelp;
  reader.set = [&](const std::string& a, const std::string& v) -> StatusOr<bool> {
    if (a == "-h" || a == "--host")
      http_options.host = v;
    else if (a == "-p" || a == "--port")
      http_options.port = static_cast<uint16_t>(std::stoi(v));
    else if (a == "--bind-workers")
      broker_options.bind = v;
    else if (a == "--threads")
      http_options.threads = std::max(1, std::stoi(v));
    else if (a == "--max-body-bytes")
      http_options.max_body_bytes = std::stoull(v);
    else if (a == "--max-image-side")
      http_options.limits.max_side = std::stoi(v);
    else if (a == "--max-pixels")
      http_options.limits.max_pixels = std::stoll(v);
    else if (a == "--max-n-steps")
      http_options.limits.max_n_steps = std::stoi(v);
    else if (a == "--max-paths")
      http_options.limits.max_paths = std::stoi(v);
    else if (a == "--max-targets")
      http_options.limits.max_targets = std::stoi(v);
    else if (a == "--max-images")
      http_options.max_images = std::max(1, std::stoi(v));
    else if (a == "--max-request-pixels")
      http_options.max_request_pixels = std::stoll(v);
    else if (a == "--decode-threads")
      http_options.decode_threads = std::max(1, std::stoi(v));
    else if (a == "--decode-memory-mb")
      http_options.decode_memory_bytes = std::stoull(v) << 20;
    else if (a == "--request-timeout-ms")
      http_options.request_timeout_ms = std::stoi(v);
    else if (a == "--client-timeout-ms")
      http_options.client_timeout_ms = std::max(1, std::stoi(v));
    else if (a == "--heartbeat-ms")
      broker_options.heartbeat_ms = std::max(10, std::stoi(v));
    else if (a == "--grace-ms")
      grace_ms = std::stoi(v);
    else if (a == "--token")
      http_options.token = v;
    else if (a == "--secret-key")
      secret_key_file = v;
    else if (a == "--worker-keys")
      worker_keys_path = v;
    else if (a == "--max-reply-bytes")
      broker_options.max_reply_bytes = std::stoll(v);
    else if (a == "--max-stream-ig-bytes")
      http_options.max_stream_ig_bytes = std::stoll(v);
    else if (a == "--port-file")
      port_file = v;
    else
      return false;
    return true;
  };
  reader.take = [&insecure](const std::vector<std::string>& all, size_t* i) -> StatusOr<bool> {
    if (all[*i] != "--insecure-workers") return false;
    insecure = true;
    return true;
  };
  if (auto exit = ReadFlags(reader, args)) return *exit;
  if (http_options.token.empty()) http_options.token = TokenFromEnvironment();
  const ChannelKeySources sources{
      secret_key_file, "INTGRADS_GATEWAY_SECRET_KEY", worker_keys_path,     "INTGRADS_WORKER_PUBLIC_KEYS",
      "--worker-keys", "the workers' public keys",    "--insecure-workers", "to let whoever reaches it join the pool"};
  auto keys = LoadChannelKeys(sources, {broker_options.bind}, insecure);
  if (!keys.ok()) {
    std::fprintf(stderr, "intgrads-gateway: %s\n", keys.status().message().c_str());
    return 2;
  }
  broker_options.secret_key = keys->secret_key;
  broker_options.worker_keys = keys->peer_keys;
  // Block the signals in every thread; this thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto broker = Broker::Create(broker_options);
  if (!broker.ok()) {
    std::fprintf(stderr, "intgrads-gateway: %s\n", broker.status().message().c_str());
    return 2;
  }
  HttpApi api(**broker, http_options);
  auto port = api.Start();
  if (!port.ok()) {
    std::fprintf(stderr, "intgrads-gateway: %s\n", port.status().message().c_str());
    return 2;
  }
  if (http_options.token.empty() && ListensOnAllInterfaces(http_options.host)) {
    std::fprintf(stderr, "intgrads-gateway: warning: serving on all interfaces without a token (see --token)\n");
  }
  if (broker_options.secret_key.empty() && EndpointIsNetwork(broker_options.bind)) {
    std::fprintf(stderr,
                 "intgrads-gateway: warning: --insecure-workers: whoever reaches %s can join the pool, receive "
                 "requests' images and answer them\n",
                 broker_options.bind.c_str());
  }
  std::fprintf(stderr, "intgrads-gateway: serving http://%s:%u/model/, workers connect to %s\n",
               http_options.host.c_str(), static_cast<unsigned>(*port), broker_options.bind.c_str());
  if (!port_file.empty()) {
    FILE* f = std::fopen(port_file.c_str(), "w");
    if (f != nullptr) {
      std::fprintf(f, "%u\n", static_cast<unsigned>(*port));
      std::fclose(f);
    }
  }
  int received = 0;
  sigwait(&signals, &received);
  std::fprintf(stderr, "intgrads-gateway: stopping: refusing new requests, finishing those in flight\n");
  if (!(*broker)->Drain(std::chrono::milliseconds(grace_ms))) {
    std::fprintf(stderr, "intgrads-gateway: grace period over; answering what is left with 503\n");
  }
  (*broker)->Stop();
  api.Shutdown();
  return 0;
}
