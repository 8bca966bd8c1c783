// The model flags every program shares, as the original server spelled them:
// -bp/--bit-path P, -lp/-lb/--lanet-path P, and beyond the original
// --model P (a TorchScript file); --cpu, --cuda [--device N] [--tf32], --bf16.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/flags.h"
#include "common/status.h"
#include "worker/engine/engine.h"
#include "worker/models/model.h"

namespace intgrads {

struct ModelFlags {
  std::optional<ModelFamily> family;
  std::string path;
  bool cuda = false;
  int device_index = 0;
  bool tf32 = false;  // let cuDNN and cuBLAS use TensorFloat-32 on the GPU
  bool bf16 = false;  // weights and passes in bfloat16 (Classifier::dtype)
};

// PyTorch lets cuDNN convolutions use TensorFloat-32 (10-bit mantissa) by
// default on Ampere and later GPUs. Measured on an H200 with BiT-R50x1, that
// moved IG by 40% of its largest value against the CPU's float32. Workers
// turn it off unless --tf32 is given.
void AllowTf32(bool allow);

// If args[*i] is a model flag, consumes it (and its value) and returns true.
// A second model flag, or a flag without its value, is an error.
StatusOr<bool> ConsumeModelFlag(const std::vector<std::string>& args, size_t* i, ModelFlags* flags);

// Without a model flag, the model named by the environment variable
// INTGRADS_MODEL, FAMILY:PATH (bit, lanet or torchscript: the containers'
// way of choosing a checkpoint); nothing when it is unset or empty.
Status ModelFromEnvironment(ModelFlags* flags);

// A FlagReader (common/flags.h) that reads the model flags into *flags (its
// `take`); the caller adds `set` for the rest.
FlagReader ModelFlagReader(std::string program, std::function<void()> print_help, ModelFlags* flags);

// Loads the model the flags name (the embedded default model without a model
// flag) onto the device they name, in bfloat16 with --bf16, or explains why
// not. With `engine`, also sets its memory budget (MemoryBudgetBytes of
// `budget_mb`) and, where that bounds the batches and chunk_size does not set
// them by hand, measures the memory of one path point (MeasurePointBytes, on
// the CPU before the move to the device).
StatusOr<std::unique_ptr<Classifier>> LoadFlaggedModel(const ModelFlags& flags, torch::Device* device,
                                                       EngineOptions* engine = nullptr, int64_t budget_mb = -1);

// The memory budget of a batch of path points in bytes (the tensors alive at
// the peak of its passes): `megabytes` if set (>= 0; 0: no bound), else
// kDefaultCpuBudgetMb on a CPU and no bound on a GPU, where one batch is
// fastest while it fits. On the CPU the resident memory runs higher: malloc
// keeps memory that tensors freed (LaNet-128/24: about 1.7x).
constexpr int64_t kDefaultCpuBudgetMb = 1536;
int64_t MemoryBudgetBytes(int64_t megabytes, const torch::Device& device);

// The long flag that loads a family: "--bit-path", "--lanet-path", "--model".
const char* ModelFlagName(ModelFamily family);

// Help text for the flags above.
const char* ModelFlagsHelp();

}  // namespace intgrads
