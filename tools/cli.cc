#include "tools/cli.h"

#include <cstdio>

namespace intgrads {

int Fail(const std::string& message) {
  std::fprintf(stderr, "intgrads-images: %s\n", message.c_str());
  return 2;
}

std::optional<int> WalkFlags(const std::vector<std::string>& args, const char* help, ModelFlags* model_flags,
                             const ArgumentHandler& handle) {
  for (size_t i = 0; i < args.size(); ++i) {
    auto consumed = ConsumeModelFlag(args, &i, model_flags);
    if (!consumed.ok()) return Fail(consumed.status().message());
    if (*consumed) continue;
    if (args[i] == "--help") {
      std::printf("%s\nmodel flags:\n%s", help, ModelFlagsHelp());
      return 0;
    }
    Status status = handle(args[i], &i);
    if (!status.ok()) return Fail(status.message());
  }
  return std::nullopt;
}

}  // namespace intgrads
