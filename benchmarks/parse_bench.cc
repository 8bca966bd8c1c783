// Times the gateway's parsing and validation of the original JSON body for
// a random W x H RGB image (what prepare_input.py writes for a photo): the
// fast scanner that ParseModelRequest tries first, and the general parser.
//   build/bin/intgrads-bench-parse [WIDTH] [HEIGHT]     (default 1000 1000)
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "common/request.h"

int main(int argc, char** argv) {
  const int width = argc > 1 ? std::atoi(argv[1]) : 1000;
  const int height = argc > 2 ? std::atoi(argv[2]) : 1000;
  std::mt19937 rng(0);
  std::uniform_int_distribution<int> value(0, 255);
  std::string body = "{\"img_data\": [";
  for (int y = 0; y < height; ++y) {
    body += y ? ",[" : "[";
    for (int x = 0; x < width; ++x) {
      body += x ? ",[" : "[";
      body += std::to_string(value(rng)) + "," + std::to_string(value(rng)) + "," + std::to_string(value(rng)) + "]";
    }
    body += "]";
  }
  body += "], \"target_class\": \"cat\"}";
  // The fast scanner first (the peak RSS printed is its), then the general
  // parser it falls back on, for comparison.
  for (const bool general : {false, true}) {
    double best = 1e9;
    for (int repeat = 0; repeat < 5; ++repeat) {
      const auto started = std::chrono::steady_clock::now();
      auto request =
          general ? intgrads::ParseModelRequestGeneral(body, intgrads::Cifar10Classes(), intgrads::RequestLimits{})
                  : intgrads::ParseModelRequest(body, intgrads::Cifar10Classes(), intgrads::RequestLimits{});
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      if (!request.ok()) {
        std::fprintf(stderr, "%s\n", request.status().message().c_str());
        return 1;
      }
      best = std::min(best, seconds);
    }
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    std::printf("%d x %d image, %.3f MB body, %s: parse and validate best of 5 %.3f ms; peak RSS so far %ld MB\n",
                width, height, static_cast<double>(body.size()) / 1e6,
                general ? "general parser (JSON document)" : "ParseModelRequest (fast scanner)", 1000.0 * best,
                usage.ru_maxrss / 1024);
  }
  return 0;
}
