#include "worker/serving/model_flags.h"

#include <ATen/Context.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/vocabulary.h"

namespace intgrads {

StatusOr<bool> ConsumeModelFlag(const std::vector<std::string>& args, size_t* i, ModelFlags* flags) {
  const std::string& a = args[*i];
  auto value = [&](std::string* out) -> Status {
    if (*i + 1 >= args.size()) return InvalidError(a + " needs a value");
    *out = args[++*i];
    return Status::Ok();
  };
  std::optional<ModelFamily> family;
  for (const FamilySpec& f : ModelFamilies()) {
    if (std::find(f.flags.begin(), f.flags.end(), a) != f.flags.end()) family = f.family;
  }
  if (family) {
    if (flags->family) {
      return InvalidError("two model flags given (" + std::string(FamilyName(*flags->family)) + " " + flags->path +
                          " and " + a + "): a server serves exactly one model; start another worker for a second");
    }
    flags->family = family;
    RETURN_IF_ERROR(value(&flags->path));
    return true;
  }
  if (a == "--cuda") {
    flags->cuda = true;
    return true;
  }
  if (a == "--tf32") {
    flags->tf32 = true;
    return true;
  }
  if (a == "--bf16") {
    flags->bf16 = true;
    return true;
  }
  if (a == "--cpu") {
    flags->cuda = false;
    return true;
  }
  if (a == "--device") {
    std::string text;
    RETURN_IF_ERROR(value(&text));
    try {
      flags->device_index = std::stoi(text);
    } catch (const std::exception&) {
      return InvalidError("--device needs a GPU index, got '" + text + "'");
    }
    return true;
  }
  return false;
}

Status ModelFromEnvironment(ModelFlags* flags) {
  const char* value = std::getenv("INTGRADS_MODEL");
  if (flags->family || value == nullptr || *value == '\0') return Status::Ok();
  const std::string text(value);
  const size_t colon = text.find(':');
  const std::string family = text.substr(0, colon);
  std::vector<std::string> known;
  for (const FamilySpec& f : ModelFamilies()) known.emplace_back(f.name);
  const std::string names = JoinNames(known);
  if (colon == std::string::npos || colon + 1 == text.size()) {
    return InvalidError("$INTGRADS_MODEL: expected FAMILY:PATH (FAMILY one of " + names + "), got '" + text + "'");
  }
  const FamilySpec* spec = FindFamily(family);
  if (spec == nullptr) return InvalidError("$INTGRADS_MODEL: family '" + family + "' is not one of " + names);
  flags->family = spec->family;
  flags->path = text.substr(colon + 1);
  return Status::Ok();
}

FlagReader ModelFlagReader(std::string program, std::function<void()> print_help, ModelFlags* flags) {
  FlagReader reader;
  reader.program = std::move(program);
  reader.print_help = std::move(print_help);
  reader.take = [flags](const std::vector<std::string>& args, size_t* i) { return ConsumeModelFlag(args, i, flags); };
  return reader;
}

namespace {

StatusOr<std::unique_ptr<Classifier>> LoadFlaggedModelOrThrow(const ModelFlags& flags, torch::Device* device,
                                                              EngineOptions* engine, int64_t budget_mb) {
  if (flags.cuda) {
    if (!torch::cuda::is_available()) {
      return UnavailableError("--cuda was given but CUDA is not available here (this LibTorch " +
                              std::string(TORCH_VERSION) + " sees no GPU); use --cpu");
    }
    if (flags.device_index < 0 || flags.device_index >= static_cast<int>(torch::cuda::device_count())) {
      return InvalidError("--device " + std::to_string(flags.device_index) + ": there are " +
                          std::to_string(torch::cuda::device_count()) + " GPUs");
    }
    *device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(flags.device_index));
    AllowTf32(flags.tf32);
  } else {
    *device = torch::Device(torch::kCPU);
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Classifier> model,
                   flags.family ? LoadModelFile(*flags.family, flags.path) : LoadDefaultModel());
  model->To(torch::TensorOptions().dtype(flags.bf16 ? torch::kBFloat16 : torch::kFloat32));
  if (engine != nullptr) {
    engine->memory_budget_bytes = MemoryBudgetBytes(budget_mb, *device);
    if (engine->memory_budget_bytes > 0 && engine->chunk_size <= 0) {
      engine->point_bytes = MeasurePointBytes(*model);  // on the CPU, before the move
    }
  }
  model->To(*device);
  return model;
}

// The first line of an exception's text: LibTorch's carry a backtrace.
std::string FirstLine(const char* what) {
  const std::string text(what);
  return text.substr(0, text.find('\n')).substr(0, 500);
}

}  // namespace

StatusOr<std::unique_ptr<Classifier>> LoadFlaggedModel(const ModelFlags& flags, torch::Device* device,
                                                       EngineOptions* engine, int64_t budget_mb) {
  // Whatever a checkpoint makes LibTorch throw (a view it cannot make, a
  // shape a layer refuses) is a refusal to serve it, not an abort.
  try {
    return LoadFlaggedModelOrThrow(flags, device, engine, budget_mb);
  } catch (const c10::Error& e) {
    return InvalidError("cannot load the model: " + FirstLine(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return InvalidError("cannot load the model: " + FirstLine(e.what()));
  }
}

int64_t MemoryBudgetBytes(int64_t megabytes, const torch::Device& device) {
  if (megabytes < 0) megabytes = device.is_cuda() ? 0 : kDefaultCpuBudgetMb;
  return megabytes * 1024 * 1024;
}

const char* ModelFlagName(ModelFamily family) { return FamilyOf(family).flags.front(); }

void AllowTf32(bool allow) {
  at::globalContext().setAllowTF32CuDNN(allow);
  at::globalContext().setAllowTF32CuBLAS(allow);
}

const char* ModelFlagsHelp() {
  return "  (no model flag)          serve the embedded default model, the project's CIFAR-10 LaNet\n"
         "  -bp, --bit-path PATH     serve a BiT checkpoint (torch.save state dict; 'module.' keys accepted)\n"
         "  -lp, -lb, --lanet-path PATH\n"
         "                           serve a LaNet checkpoint (dict with 'model_state_dict', or a state dict)\n"
         "  --model PATH             serve your own TorchScript model, described by the JSON sidecar beside it\n"
         "                           (model.pt -> model.json: input_size, mean, std, classes). The file is\n"
         "                           code: load only files you trust\n"
         "  --cpu                    compute on the CPU (default)\n"
         "  --cuda                   compute on a GPU; fails at start when CUDA is not available\n"
         "  --device N               the GPU index with --cuda (default 0)\n"
         "  --tf32                   let the GPU compute in TensorFloat-32: faster, but IG moves by up to 40%\n"
         "                           of its largest value on BiT (off: IEEE float32, as on the CPU)\n"
         "  --bf16                   weights and passes in bfloat16 (IG accumulated in float32); opt in: its\n"
         "                           error and speed against float32 are in docs/PERFORMANCE.md\n";
}

}  // namespace intgrads
