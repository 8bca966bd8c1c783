// intgrads-worker: holds one model and computes attributions for a gateway.
//   intgrads-worker --connect tcp://HOST:5555 (-bp P | -lp P) [--cpu | --cuda [--device N]]
#include <torch/types.h>
#include <torch/utils.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/curve.h"
#include "common/flags.h"
#include "common/memory.h"
#include "worker/serving/model_flags.h"
#include "worker/serving/worker_loop.h"

namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

void PrintHelp() {
  std::printf(
      "usage: intgrads-worker --connect ENDPOINT [-bp PATH | -lp PATH] [options]\n\n"
      "Loads one model (without a model flag: $INTGRADS_MODEL, FAMILY:PATH with FAMILY bit, lanet or torchscript,\n"
      "else the embedded default model) and serves attributions to an\n"
      "intgrads-gateway over ZeroMQ.\n\n"
      "  --connect ENDPOINT       a gateway's worker endpoint (default tcp://127.0.0.1:5555); several, comma-\n"
      "                           separated or the flag again: the worker serves whichever asks, each gateway\n"
      "                           with its own heartbeats (the gateways share one key pair)\n"
      "  --encoder-threads N      threads encoding answers while the next batch computes (default 1)\n"
      "%s"
      "  --name NAME              the model name requests use (default 'default')\n"
      "  --secret-key FILE        this worker's CURVE secret key (intgrads-keygen; default: the key in\n"
      "                           $INTGRADS_WORKER_SECRET_KEY)\n"
      "  --gateway-key FILE       the gateway's CURVE public key (default: the key in $INTGRADS_GATEWAY_PUBLIC_KEY):\n"
      "                           the channel is encrypted and both ends proven; needed for a tcp endpoint\n"
      "  --insecure-gateway       connect to a tcp endpoint without keys: whoever listens there gets the\n"
      "                           requests' images and this worker's answers\n"
      "  --max-request-bytes N    the largest frame taken from the gateway (default 268435456)\n"
      "  --ready-fd N             write a byte to file descriptor N once ready (for a launcher)\n"
      "  --threads N              intra-op CPU threads (default: all cores)\n"
      "  --memory-budget-mb N     memory for one batch of path points; the batch size follows from the\n"
      "                           model's memory per point, measured at start (default 1536 on a CPU, 0 on\n"
      "                           a GPU; 0: no bound)\n"
      "  --chunk-size N           at most N path points per batch, by hand (default 0: from the budget, and\n"
      "                           at most 64 on a CPU, where larger batches run slower); batches are\n"
      "                           evened out (50 points at most 16 a batch: 13, 13, 12, 12)\n"
      "  --gzip-level N           response compression 0..9 (default 0, stored: level 1 costs ~30 ms\n"
      "                           a 1 MB answer for a third fewer bytes; worth it below ~100 Mbit/s)\n"
      "  --batch-requests N       take up to N requests at a time from the gateway (1..256, default 1) and\n"
      "                           compute those queued here together: their path points share forward\n"
      "                           and backward batches (meant for GPUs; on a CPU no gain, no harm)\n"
      "  --batch-window-ms MS     how long a request waits for others to batch with (default 0: batch\n"
      "                           only what queued while the worker was busy)\n"
      "  --max-n-steps N          largest n_steps accepted (default 1024)\n"
      "  --max-paths N            most paths per image: SmoothGrad samples x baselines (default 64)\n"
      "  --max-targets N          most classes explained per image: a target list or top_k (default 16)\n"
      "  --heartbeat-ms N         heartbeat interval (default 1000)\n"
      "  --help                   this text\n",
      intgrads::ModelFlagsHelp());
}

int Run(int argc, char** argv) {
  using namespace intgrads;
  std::vector<std::string> args(argv + 1, argv + argc);
  ModelFlags model_flags;
  WorkerOptions options;
  int64_t budget_mb = -1;
  std::string secret_key_file, gateway_key_file;
  std::vector<std::string> connect;
  bool insecure = false;
  FlagReader reader = ModelFlagReader("intgrads-worker", PrintHelp, &model_flags);
  reader.set = [&](const std::string& a, const std::string& v) -> StatusOr<bool> {
    if (a == "--connect") {
      for (size_t from = 0; from <= v.size();) {  // a list, comma-separated, or the flag again
        const size_t comma = std::min(v.find(',', from), v.size());
        if (comma > from) connect.push_back(v.substr(from, comma - from));
        from = comma + 1;
      }
    } else if (a == "--encoder-threads")
      options.encoder_threads = std::max(1, std::stoi(v));
    else if (a == "--token")
      return InvalidError(
          "--token: workers no longer take the HTTP token; the worker channel uses CURVE keys (--secret-key, "
          "--gateway-key)");
    else if (a == "--secret-key")
      secret_key_file = v;
    else if (a == "--gateway-key")
      gateway_key_file = v;
    else if (a == "--max-request-bytes")
      options.max_request_bytes = std::stoll(v);
    else if (a == "--ready-fd")
      options.ready_fd = std::stoi(v);
    else if (a == "--name")
      options.model_name = v;
    else if (a == "--threads")
      torch::set_num_threads(std::stoi(v));
    else if (a == "--chunk-size")
      options.engine.chunk_size = std::stoi(v);
    else if (a == "--memory-budget-mb")
      budget_mb = std::stoll(v);
    else if (a == "--gzip-level")
      options.gzip_level = std::stoi(v);
    else if (a == "--batch-requests")
      options.batch_requests = std::stoi(v);
    else if (a == "--batch-window-ms")
      options.batch_window_ms = std::stoi(v);
    else if (a == "--max-n-steps")
      options.limits.max_n_steps = std::stoi(v);
    else if (a == "--max-paths")
      options.limits.max_paths = std::stoi(v);
    else if (a == "--max-targets")
      options.limits.max_targets = std::stoi(v);
    else if (a == "--heartbeat-ms")
      options.heartbeat_ms = std::max(10, std::stoi(v));
    else
      return false;
    return true;
  };
  reader.take = [model_flag = reader.take, &insecure](const std::vector<std::string>& all,
                                                      size_t* i) -> StatusOr<bool> {
    if (all[*i] != "--insecure-gateway") return model_flag(all, i);
    insecure = true;
    return true;
  };
  if (auto exit = ReadFlags(reader, args)) return *exit;
  if (Status from_environment = ModelFromEnvironment(&model_flags); !from_environment.ok()) {
    std::fprintf(stderr, "intgrads-worker: %s\n", from_environment.message().c_str());
    return 2;
  }
  if (options.batch_requests < 1 || options.batch_requests > kMaxSlots || options.batch_window_ms < 0) {
    std::fprintf(stderr, "intgrads-worker: --batch-requests must be 1..%d and --batch-window-ms at least 0\n",
                 kMaxSlots);
    return 2;
  }
  const ChannelKeySources sources{
      secret_key_file,      "INTGRADS_WORKER_SECRET_KEY",
      gateway_key_file,     "INTGRADS_GATEWAY_PUBLIC_KEY",
      "--gateway-key",      "the gateway's public key",
      "--insecure-gateway", "to send the requests' images and answers in clear to whoever listens there"};
  if (!connect.empty()) options.connect = connect;
  auto keys = LoadChannelKeys(sources, options.connect, insecure);
  if (!keys.ok() || keys->peer_keys.size() > 1) {
    std::fprintf(stderr, "intgrads-worker: %s\n",
                 keys.ok() ? "--gateway-key: expected one key" : keys.status().message().c_str());
    return 2;
  }
  options.secret_key = keys->secret_key;
  options.gateway_key = keys->peer_keys.empty() ? "" : keys->peer_keys.front();
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  torch::Device device(torch::kCPU);
  auto model = LoadFlaggedModel(model_flags, &device, &options.engine, budget_mb);
  if (!model.ok()) {
    std::fprintf(stderr, "intgrads-worker: %s\n", model.status().message().c_str());
    return 2;
  }
  const long long most = ChunkRows(options.engine, 1 << 20, device.is_cuda());
  if (options.engine.point_bytes > 0) {
    std::fprintf(stderr, "intgrads-worker: %.1f MB per path point, batches of at most %lld points\n",
                 static_cast<double>(options.engine.point_bytes) / (1024.0 * 1024.0), most);
  } else {
    std::fprintf(stderr, "intgrads-worker: batches of at most %lld path points (no memory budget measured)\n", most);
  }
  return RunWorker(**model, device, options, g_stop);
}

}  // namespace

// The worker runs on a thread of its own, which loads the model and computes
// every request (RunWorker's socket loop gets another): passes run on a
// thread other than the one that loaded the model ran markedly slower in
// Debian's CPU build (docs/PERFORMANCE.md, "What was tried"), and unlike the main thread's, a
// thread's stack is mapped whole at its start, so a request that exhausts the
// memory cannot leave it unable to grow (a SIGSEGV instead of a 503).
int main(int argc, char** argv) {
  intgrads::KeepFreedMemoryForPasses();
  int code = 0;
  std::thread worker([&] {
    try {
      code = Run(argc, argv);
    } catch (const std::exception& e) {
      const std::string what = e.what();
      std::fprintf(stderr, "intgrads-worker: %s\n", what.substr(0, what.find('\n')).substr(0, 500).c_str());
      code = 1;
    }
  });
  worker.join();
  return code;
}
