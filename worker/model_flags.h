// The model flags every program shares, as the original server spelled them:
// -bp/--bit-path P, -lp/-lb/--lanet-path P, --cpu, --cuda [--device N].
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/model.h"

namespace intgrads {

struct ModelFlags {
  std::optional<ModelFamily> family;
  std::string path;
  bool cuda = false;
  int device_index = 0;
};

// If args[*i] is a model flag, consumes it (and its value) and returns true.
// A second model flag, or a flag without its value, is an error.
StatusOr<bool> ConsumeModelFlag(const std::vector<std::string>& args, size_t* i, ModelFlags* flags);

// Loads the model the flags name onto the device they name, or explains why not.
StatusOr<std::unique_ptr<Classifier>> LoadFlaggedModel(const ModelFlags& flags, torch::Device* device);

// Help text for the flags above.
const char* ModelFlagsHelp();

}  // namespace intgrads
