// intgrads-images explain: the command-line client of a running service.
//
//   intgrads-images explain cat.jpg photos/ --target predicted --out results/ --format png
//
// Sends each image (a folder: its PNG and JPEG files) to POST
// /v1/attributions, writes one output per image into --out, shows a
// progress bar on stderr and prints a summary table (predicted class,
// probability, convergence delta) on stdout.
#pragma once

#include <string>
#include <vector>

namespace intgrads {

int RunExplain(const std::vector<std::string>& args);

}  // namespace intgrads
