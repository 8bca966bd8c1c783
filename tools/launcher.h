// The original's one-command server: starts an intgrads-gateway and its
// local intgrads-worker(s) as child processes, restarts a worker that dies,
// and on SIGINT or SIGTERM stops them all and exits 0.
#pragma once

#include <string>
#include <vector>

namespace intgrads {

// args: the command line after the program name. Returns the exit code.
int RunLauncher(const std::vector<std::string>& args);

}  // namespace intgrads
