// What the subcommands of intgrads-images share: the error exit, and the walk
// over their arguments with the model flags taken out.
//
//   if (auto exit = WalkFlags(args, kHelp, &model_flags, handle)) return *exit;
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/model_flags.h"

namespace intgrads {

// The path and region options as flags: --baseline, --blur-sigma,
// --baseline-count, --smoothgrad-samples, --smoothgrad-sigma, --seed,
// --tolerance, --regions, --region-min-side, --segments, --top-regions (the
// parameters of common/attributions.h, PathParameters and RegionParameters,
// with - for _), and --baseline-image PATH. The parameter a flag names, or ""
// for another flag.
std::string OptionFlagParameter(const std::string& flag);
extern const char kPathFlagsHelp[];

// Prints "intgrads-images: MESSAGE" on stderr; returns the exit code 2.
int Fail(const std::string& message);

// Takes one argument that is not a model flag: args[*i]. It may consume values
// by advancing *i.
using ArgumentHandler = std::function<Status(const std::string& argument, size_t* i)>;

// Walks args: model flags fill *model_flags, --help prints `help` followed by
// the model flags' help and ends the program with 0, anything else goes to
// `handle`; an error (a handler's or a model flag's) is printed and ends the
// program with 2. Returns that exit code, or nothing when the walk is done.
std::optional<int> WalkFlags(const std::vector<std::string>& args, const char* help, ModelFlags* model_flags,
                             const ArgumentHandler& handle);

}  // namespace intgrads
