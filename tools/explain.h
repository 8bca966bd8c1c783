// intgrads-images explain: the command-line client of a running service.
//
//   intgrads-images explain cat.jpg photos/ test.zip --out results/ --format png
//
// Sends each image (a folder: every PNG and JPEG in its tree; a zip: its
// image members, as in a CIFAR-style archive) to POST /v1/attributions,
// several at a time (by default as many as the pool has workers), over
// http:// or https:// (libcurl). Writes one output per image into --out,
// keeps those already there (a second run resumes), writes summary.csv and
// summary.json beside them, shows progress with the rate and the time left
// on stderr and prints a table (predicted class, probability, convergence
// delta) on stdout.
#pragma once

#include <string>
#include <vector>

namespace intgrads {

int RunExplain(const std::vector<std::string>& args);

}  // namespace intgrads
