// The walk over a command line that every program shares: FLAG VALUE pairs
// (or FLAG=VALUE), --help, and the same errors, printed as "PROGRAM: MESSAGE"
// on stderr with the exit status 2. Not Debian's CLI11: the original's flags
// are single-dash names of two letters (-bp, -lp, -lb), which CLI11 refuses
// as option names, and its -h is the host, not help.
//
//   FlagReader reader;
//   reader.program = "intgrads-worker";
//   reader.print_help = PrintHelp;
//   reader.set = [&](const std::string& flag, const std::string& value) -> StatusOr<bool> {
//     if (flag == "--threads") threads = std::stoi(value);  // "--threads needs a number" if it throws
//     else return false;                                    // "unknown flag"
//     return true;
//   };
//   if (auto exit = ReadFlags(reader, args)) return *exit;
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace intgrads {

struct FlagReader {
  // The errors' prefix: "intgrads-worker", or "intgrads-images: train".
  std::string program;
  // For a help flag, which ends the walk with 0.
  std::function<void()> print_help;
  std::vector<std::string> help_flags = {"--help"};  // not -h: the gateway's --host
  // Each FLAG VALUE pair: true once used, false for a flag the program does
  // not have, or an error to print. A std::logic_error it lets out (std::stoi's
  // invalid_argument and out_of_range) reads "FLAG needs a number".
  std::function<StatusOr<bool>(const std::string& flag, const std::string& value)> set;
  // If set, asked first about every argument: true when it took args[*i]
  // itself (a flag without a value, a positional argument, a model flag),
  // with *i advanced past any value it consumed; or an error to print.
  std::function<StatusOr<bool>(const std::vector<std::string>& args, size_t* i)> take;
};

// Walks args (--flag=value read as --flag value). Returns the exit status
// when the walk ends the program (0 after --help, 2 after an error, printed),
// nothing when every argument was read.
std::optional<int> ReadFlags(const FlagReader& reader, const std::vector<std::string>& args);

}  // namespace intgrads
