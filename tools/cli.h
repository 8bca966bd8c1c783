// What the subcommands of intgrads-images share: the error exit, and the walk
// over their arguments with the model flags taken out.
//
//   if (auto exit = WalkFlags("attribute", args, kHelp, &model_flags, set)) return *exit;
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/flags.h"
#include "common/status.h"
#include "worker/serving/model_flags.h"

namespace intgrads {

// The path and region options as flags: --baseline, --blur-sigma,
// --baseline-count, --smoothgrad-samples, --smoothgrad-sigma, --seed,
// --tolerance, --regions, --region-min-side, --segments, --top-regions (the
// parameters of common/attributions.h, PathParameters and RegionParameters,
// with - for _), and --baseline-image PATH. The parameter a flag names, or ""
// for another flag.
std::string OptionFlagParameter(const std::string& flag);
extern const char kPathFlagsHelp[];

// A help text with each word list filled in from its table
// (common/vocabulary.h): "{method}" becomes "gausslegendre, riemann_left,
// ...", and so for {format}, {baseline}, {heatmap}, {sign} and {regions}.
std::string WithWords(std::string text);

// Prints "intgrads-images: MESSAGE" on stderr; returns the exit code 2.
int Fail(const std::string& message);

// Walks the arguments of the subcommand `command` ("attribute") as
// ReadFlags does (common/flags.h): model flags fill *model_flags, --help
// prints `help` followed by the model flags' help, and `set` and `take` (if
// given) read the rest. Errors print as "intgrads-images: COMMAND: MESSAGE".
// Returns the exit status when the walk ends the program, nothing when it
// is done.
std::optional<int> WalkFlags(const std::string& command, const std::vector<std::string>& args, const char* help,
                             ModelFlags* model_flags, const decltype(FlagReader::set)& set,
                             const decltype(FlagReader::take)& take = nullptr);

}  // namespace intgrads
