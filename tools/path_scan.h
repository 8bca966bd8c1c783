// intgrads-images path-scan: how the target logit changes along the
// integration path, and how complete each quadrature rule's IG is.
#pragma once

#include <string>
#include <vector>

namespace intgrads {

int RunPathScan(const std::vector<std::string>& args);

}  // namespace intgrads
