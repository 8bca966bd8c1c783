// intgrads-keygen: makes the CURVE key pairs of the worker channel.
//   intgrads-keygen keys/gateway keys/worker   # keys/gateway.key, keys/gateway.pub, keys/worker.key, ...
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "common/curve.h"

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0) {
    std::printf(
        "usage: intgrads-keygen [--keep] PREFIX [PREFIX...]\n\n"
        "Makes a CURVE key pair for each PREFIX: PREFIX.key, the secret key (readable by its owner only), and\n"
        "PREFIX.pub, the public key. The gateway takes its own .key (--secret-key) and the workers' .pub files\n"
        "(--worker-keys, a directory or a file of keys); each worker takes its own .key (--secret-key) and the\n"
        "gateway's .pub (--gateway-key). Existing files are never overwritten: an error, or with --keep, a\n"
        "PREFIX whose pair exists is left as it is (a deployment's first start makes them, later ones keep them).\n");
    return argc < 2 ? 2 : 0;
  }
  int first = 1;
  bool keep = false;
  if (std::strcmp(argv[1], "--keep") == 0) {
    keep = true;
    first = 2;
  }
  if (!intgrads::CurveAvailable()) {
    std::fprintf(stderr, "intgrads-keygen: this ZeroMQ was built without CURVE\n");
    return 2;
  }
  for (int i = first; i < argc; ++i) {
    const std::string prefix = argv[i];
    if (keep && access((prefix + ".key").c_str(), F_OK) == 0 && access((prefix + ".pub").c_str(), F_OK) == 0) {
      std::printf("%s.key, %s.pub: kept\n", argv[i], argv[i]);
      continue;
    }
    auto pair = intgrads::WriteKeyPair(prefix);
    if (!pair.ok()) {
      std::fprintf(stderr, "intgrads-keygen: %s\n", pair.status().message().c_str());
      return 2;
    }
    std::printf("%s.key, %s.pub: public key %s\n", argv[i], argv[i], pair->public_key.c_str());
  }
  return 0;
}
