// Times the gateway's parsing and validation of the original JSON body for
// a random W x H RGB image (what prepare_input.py writes for a photo).
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
  double best = 1e9;
  for (int repeat = 0; repeat < 3; ++repeat) {
    const auto started = std::chrono::steady_clock::now();
    auto request = intgrads::ParseModelRequest(body, intgrads::Cifar10Classes(), intgrads::RequestLimits{});
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (!request.ok()) {
      std::fprintf(stderr, "%s\n", request.status().message().c_str());
      return 1;
    }
    best = std::min(best, seconds);
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("%d x %d image, %.1f MB body: parse and validate best of 3 %.3f s; peak RSS %ld MB (body included)\n",
              width, height, static_cast<double>(body.size()) / 1e6, best, usage.ru_maxrss / 1024);
  return 0;
}
