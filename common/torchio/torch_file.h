// Reading torch.save files (zip and legacy formats) without running any
// Python code, and writing the response dict in a form that
// torch.load(..., weights_only=True) accepts.
//
//   ASSIGN_OR_RETURN(PickleValuePtr root, LoadTorchFile("/path/model.pth"));
//   ASSIGN_OR_RETURN(StateDict weights, ExtractStateDict(*root, "/path/model.pth"));
#pragma once

#include <torch/types.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/torchio/pickle.h"

namespace intgrads {

// Model weights by state-dict key, in the order of the file.
using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

// Parses the bytes of a torch.save file; `source` names it in errors.
StatusOr<PickleValuePtr> ParseTorchFile(std::string_view bytes, const std::string& source);
StatusOr<PickleValuePtr> LoadTorchFile(const std::string& path);

// The state dict inside a checkpoint: the object itself when it maps names to
// tensors, else its 'model_state_dict', 'state_dict' or 'model' entry. A
// DataParallel 'module.' prefix is removed. Non-tensor entries (optimizer
// state, epochs) are ignored.
StatusOr<StateDict> ExtractStateDict(const PickleValue& root, const std::string& source);

// One entry of a dict written by TorchSaveDict: a tensor or an integer.
struct SavedEntry {
  std::string key;
  torch::Tensor tensor;  // undefined for integer entries
  int64_t integer = 0;
};

// torch.save(dict) bytes in the zip format (archive folder `archive_name`).
// Tensors are written contiguous, on the CPU, in their own dtype.
std::string TorchSaveDict(const std::vector<SavedEntry>& entries, const std::string& archive_name = "archive");

}  // namespace intgrads
