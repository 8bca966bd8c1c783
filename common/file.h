// Whole-file reads for checkpoints, images and test fixtures.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#include "common/status.h"

namespace intgrads {

inline StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot open '" + path + "'");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return DataLossError("cannot read '" + path + "'");
  return buffer.str();
}

}  // namespace intgrads
