#include "common/flags.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace intgrads {

namespace {

int Failed(const FlagReader& reader, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", reader.program.c_str(), message.c_str());
  return 2;
}

}  // namespace

std::optional<int> ReadFlags(const FlagReader& reader, const std::vector<std::string>& given) {
  // --flag=value is --flag value (GNU's long-option form).
  std::vector<std::string> args;
  for (const std::string& arg : given) {
    const size_t equals = arg.find('=');
    if (arg.rfind("--", 0) == 0 && equals != std::string::npos && equals > 2) {
      args.push_back(arg.substr(0, equals));
      args.push_back(arg.substr(equals + 1));
    } else {
      args.push_back(arg);
    }
  }
  for (size_t i = 0; i < args.size(); ++i) {
    if (reader.take) {
      const StatusOr<bool> taken = reader.take(args, &i);
      if (!taken.ok()) return Failed(reader, taken.status().message());
      if (taken.value()) continue;
    }
    const std::string& flag = args[i];
    if (std::find(reader.help_flags.begin(), reader.help_flags.end(), flag) != reader.help_flags.end()) {
      if (reader.print_help) reader.print_help();
      return 0;
    }
    if (i + 1 >= args.size()) return Failed(reader, "unknown flag or missing value: " + flag + " (see --help)");
    const std::string& value = args[++i];
    StatusOr<bool> used = false;
    try {
      used = reader.set(flag, value);
    } catch (const std::logic_error&) {  // std::stoi's invalid_argument and out_of_range
      return Failed(reader, std::string(flag).append(" needs a number, got '").append(value).append("'"));
    }
    if (!used.ok()) return Failed(reader, used.status().message());
    if (!used.value()) return Failed(reader, "unknown flag " + flag + " (see --help)");
  }
  return std::nullopt;
}

}  // namespace intgrads
